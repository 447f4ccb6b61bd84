# A tiny ParaX Swin Panoptic FPN on a tiny COCO-panoptic-layout set
# (mmparax.testing.make_coco_panoptic), for the end-to-end tests. Built on
# the real recipe; data paths and the checkpoint come from --cfg-options:
#   {train,val,test}_dataloader.dataset.data_root=...
#   {val,test}_evaluator.ann_file=... {val,test}_evaluator.seg_prefix=...
#   model.backbone.init_cfg.checkpoint=...
# and optim_wrapper.type=OptimWrapper (fp32 on the CPU).
_base_ = [
    '../../configs/parax/parax_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py'
]
# COCO_THINGS then COCO_STUFF
thing_classes = ('person', 'car', 'dog')
stuff_classes = ('road', 'sky-other-merged', 'grass-merged')
metainfo = dict(
    classes=thing_classes + stuff_classes,
    thing_classes=thing_classes,
    stuff_classes=stuff_classes)
img_scale = (128, 128)

model = dict(
    backbone=dict(
        peft=dict(hidden_dim=8, router_hidden=4),
        init_cfg=dict(type='Pretrained', checkpoint=None),
        # mmparax.testing.tiny_swin_kwargs()
        embed_dims=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        drop_path_rate=0.1),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=3),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(
            num_convs=2, in_channels=32, conv_out_channels=32,
            num_classes=3)),
    semantic_head=dict(
        num_things_classes=3,
        num_stuff_classes=3,
        in_channels=32,
        inner_channels=32,
        norm_cfg=dict(type='GN', num_groups=8, requires_grad=True)),
    panoptic_fusion_head=dict(num_things_classes=3, num_stuff_classes=3),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(score_thr=0.3, max_per_img=20),
        # the images have 16384 pixels
        panoptic=dict(stuff_area_limit=64)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadPanopticAnnotations'),
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
# PQ statistics in the evaluating process (no worker pool)
val_evaluator = dict(nproc=1)
test_evaluator = dict(nproc=1)

# one epoch of two iterations, checkpoints after each; evaluation by
# tools/test.py only
train_cfg = dict(max_epochs=1, val_begin=2)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=1))
randomness = dict(seed=0)
