# The ParaX ViT-L SETR-PUP recipe (Table 7) with a tiny ViT (6 blocks of
# width 32, outputs after blocks 2, 3, 5 and 6: expert centers of 2, 1, 2
# and 1 blocks, so the test sees several centers), tiny heads and 64x64 crops, for tests/test_setr.py. Paths
# come from --cfg-options:
#   {train,val,test}_dataloader.dataset.data_root=...
#   model.backbone.init_cfg.checkpoint=...
# and on a CPU: optim_wrapper.type=OptimWrapper.
_base_ = [
    '../../configs/parax/parax_vit-l_setr-pup_8xb2-160k_ade20k-512x512.py'
]
crop_size = (64, 64)
width = 32
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(
            _delete_=True,  # replaces 'large'
            embed_dims=width,
            num_layers=6,
            num_heads=2,
            feedforward_channels=4 * width),
        img_size=64,
        out_indices=(1, 2, 4, 5),
        block_groups=[2, 1, 2, 1],
        peft=dict(hidden_dim=8, router_hidden=4)),
    decode_head=dict(in_channels=width, channels=16),
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=width,
            channels=16,
            in_index=i,
            num_classes=150,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=2,
            up_scale=4,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
        for i in (0, 1, 2)
    ],
    test_cfg=dict(crop_size=crop_size, stride=(43, 43)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(256, 64),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
