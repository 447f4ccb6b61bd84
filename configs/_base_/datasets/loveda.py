# LoveDA (land cover, Rural and Urban domains), 7 classes, in the layout of
# mmseg's tools/dataset_converters/loveda.py: the 1024x1024 images_png /
# masks_png files of Train.zip, Val.zip and Test.zip, both domains in one
# folder per split (2522 train, 1669 val; the 1796 test images have no
# masks: the test split here is the validation split, as in mmseg).
# Masks 1-7: background, building, road, water, barren, forest,
# agricultural; 0: no-data, ignored: reduce_zero_label makes it 255 and the
# classes 0-6.
# Pipelines as mmseg's configs/_base_/datasets/loveda.py.
# mmseg's LoveDADataset, whose errors name the file (mmparax.datasets)
dataset_type = 'mmparax.LoveDADataset'
data_root = 'data/loveDA'
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
    # the 1024x1024 images are evaluated whole, at their size
    dict(type='Resize', scale=(1024, 1024), keep_ratio=True),
    # annotations are loaded after the resize: metrics use the original size
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
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader

# mmseg's IoUMetric, warning about labels it cannot score
val_evaluator = dict(type='mmparax.IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
