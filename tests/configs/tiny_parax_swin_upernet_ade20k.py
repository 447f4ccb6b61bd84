# A tiny ParaX Swin UperNet on a tiny ADE20K-layout data set, for the tool
# tests. Paths come from --cfg-options:
#   {train,val,test}_dataloader.dataset.data_root=...
#   model.backbone.init_cfg.checkpoint=...
_base_ = [
    '../../configs/_base_/models/upernet_swin.py',
    '../../configs/_base_/datasets/ade20k.py',
    '../../configs/_base_/default_runtime.py',
    '../../configs/_base_/schedules/schedule_160k.py'
]
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.Swin',
        peft=dict(type='ParaX', hidden_dim=8, kernel_sizes=(3, ), router_hidden=4),
        init_cfg=dict(type='Pretrained', checkpoint=None),
        embed_dims=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        drop_path_rate=0.1),
    decode_head=dict(
        in_channels=[16, 32, 64, 128], channels=16, num_classes=150),
    auxiliary_head=dict(in_channels=64, channels=8, num_classes=150))

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
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type='mmparax.CheckpointHook', by_epoch=False, interval=2))
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),
    dict(type='mmparax.PEFTCheckpointHook')
]
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
