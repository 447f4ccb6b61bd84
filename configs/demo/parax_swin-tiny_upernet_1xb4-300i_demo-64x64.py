# CPU demo: ParaX on a tiny Swin + UperNet, synthetic ADE20K-layout data.
# demo/train_demo.py writes the data set (mmparax.testing.make_ade20k) and a
# tiny Microsoft-layout Swin checkpoint with RANDOM weights, then runs
# tools/train.py and tools/test.py on this config. Nothing here reproduces
# the paper's figures: it exercises the real training path in minutes.
_base_ = [
    '../_base_/models/upernet_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
data_root = 'work_dirs/demo/data/ade20k_synthetic'
checkpoint_file = 'work_dirs/demo/pretrain/swin_tiny_patch4_window7_random.pth'

# the synthetic set has 8 classes (labels 1..8, 0 = ignored "other"): the
# first 8 ADE20K class names, so mmseg's class subset mapping applies
num_classes = 8
metainfo = dict(classes=('wall', 'building', 'sky', 'floor', 'tree',
                         'ceiling', 'road', 'bed '))
crop_size = (64, 64)
max_iters = 300

data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.Swin',
        peft=dict(
            type='ParaX', hidden_dim=8, kernel_sizes=(3, 5, 7), router_hidden=8),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        # mmparax.testing.tiny_swin_kwargs()
        pretrain_img_size=224,
        embed_dims=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        drop_path_rate=0.1),
    decode_head=dict(
        in_channels=[16, 32, 64, 128],
        channels=64,
        num_classes=num_classes,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=64,
        channels=32,
        num_classes=num_classes,
        norm_cfg=norm_cfg))

# ADE20K's pipeline at 1/8 of its resolution
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
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# plain AdamW in fp32 (fast on the CPU; --amp trains in float16 there too,
# slowly); frozen parameters left out
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01))
warmup_iters = 30
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=warmup_iters,
        end=max_iters,
        by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=100)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=1),
    # also in the schedule's default_hooks; named here because the demo's
    # drop path makes resuming (--resume) exact only with it
    rng_state=dict(type='mmparax.RNGStateHook'))
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),
    dict(type='mmparax.PEFTCheckpointHook')
]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
