# A tiny ParaX ConvNeXt Mask R-CNN on a tiny COCO-layout set
# (mmparax.testing.make_coco_instance), for the end-to-end tests. Built on
# the real recipe; data paths and the checkpoint come from --cfg-options:
#   {train,val,test}_dataloader.dataset.data_root=...
#   {val,test}_evaluator.ann_file=... model.backbone.init_cfg.checkpoint=...
# and optim_wrapper.type=OptimWrapper (fp32 on the CPU).
_base_ = [
    '../../configs/parax/parax_convnext-b_mask-rcnn_fpn_8xb2-1x_coco.py'
]
metainfo = dict(classes=('person', 'car', 'dog'))  # COCO_THINGS
num_classes = 3
img_scale = (128, 128)

model = dict(
    backbone=dict(
        peft=dict(hidden_dim=8, router_hidden=4),
        init_cfg=dict(type='Pretrained', checkpoint=None),
        # mmparax.testing.tiny_convnext_kwargs()
        arch=dict(
            _delete_=True, depths=[2, 2, 2, 2], channels=[16, 32, 64, 128]),
        drop_path_rate=0.1),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(
            in_channels=32, fc_out_channels=64, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(
            num_convs=2,
            in_channels=32,
            conv_out_channels=32,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# one epoch of two iterations, checkpoints after each; evaluation by
# tools/test.py only
train_cfg = dict(max_epochs=1, val_begin=2)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=1))
randomness = dict(seed=0)
