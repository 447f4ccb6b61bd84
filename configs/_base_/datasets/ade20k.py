# ADE20K (SceneParsing), 150 classes; label 0 ("other") is ignored
# mmseg's ADE20KDataset, whose errors name the file (mmparax.datasets)
dataset_type = 'mmparax.ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # then both sides up to the next multiple of 32, bilinear (a 512x683
    # image is evaluated at 512x704); the predictions are resized back to
    # the original size
    dict(type='ResizeToMultiple', size_divisor=32),
    # annotations are loaded after the resizes: metrics use the original size
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

# mmseg's IoUMetric, warning about labels it cannot score
val_evaluator = dict(type='mmparax.IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
