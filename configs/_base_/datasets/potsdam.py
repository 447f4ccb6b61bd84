# ISPRS Potsdam (2D Semantic Labeling Contest), 6 classes, in the layout of
# mmseg's tools/dataset_converters/potsdam.py: 512x512 clips of the 6000x6000
# RGB tiles (2_Ortho_RGB.zip) and of their eroded labels
# (5_Labels_all_noBoundary.zip), 3456 for training and 2016 for validation,
# image and label under the same name ({tile}_{x0}_{y0}_{x1}_{y1}.png).
# Labels 1-6: impervious surface, building, low vegetation, tree, car,
# clutter; 0: eroded boundaries (black in the *_label_noBoundary.tif files),
# ignored: reduce_zero_label makes it 255 and the classes 0-5.
# Pipelines as mmseg's configs/_base_/datasets/potsdam.py.
# mmseg's PotsdamDataset, whose errors name the file (mmparax.datasets)
dataset_type = 'mmparax.PotsdamDataset'
data_root = 'data/potsdam'
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(512, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # the 512x512 clips are evaluated whole, at their size
    dict(type='Resize', scale=(512, 512), keep_ratio=True),
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
