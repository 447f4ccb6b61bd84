# Image folders at 224x224 (Table 4): mmpretrain's CustomDataset reads
# <data_root>/{train,test}/<class>/<image>; the label of an image is the index
# of its folder in sorted order, as torchvision's ImageFolder gives it. Each
# data set's config (food101_bs128_224.py, imagenet-r_bs128_224.py,
# svhn_bs128_224.py) sets the folder and the number of classes.
# The pipelines are those of the ParaX reference (MAE's linear-probing
# transforms): a random resized crop to 224 (scale 0.08-1, PIL bicubic) and a
# flip for training; resize of the short side to 256 (PIL bicubic) and a 224
# center crop for testing; ImageNet mean and std; images decoded with PIL.
dataset_type = 'CustomDataset'
data_root = None  # set by each data set's config
data_preprocessor = dict(
    num_classes=None,  # set by each data set's config
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    # decoded images are BGR
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# 8 GPUs x 128 images = total batch 1024; incomplete last batches dropped
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='test',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# the paper evaluates on the test split (there is no validation split)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
