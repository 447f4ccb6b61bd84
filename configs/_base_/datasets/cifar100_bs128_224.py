# CIFAR-100 at 224x224 (Table 4): mmpretrain's CIFAR100 reads the official
# python version, data/cifar100/cifar-100-python/{train,test,meta} (50,000
# train / 10,000 test images of 32x32; it downloads cifar-100-python.tar.gz
# when the folder is empty). The pipelines are those of the ParaX reference
# (MAE's linear-probing transforms): a random resized crop to 224 (scale
# 0.08-1, PIL bicubic) and a flip for training; resize of the short side to
# 256 (PIL bicubic) and a 224 center crop for testing; ImageNet mean and std.
dataset_type = 'CIFAR100'
data_root = 'data/cifar100'
data_preprocessor = dict(
    num_classes=100,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    # the arrays of the CIFAR files are RGB already
    to_rgb=False)

train_pipeline = [
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
        split='train',
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
        split='test',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# the paper evaluates on the test split (there is no validation split)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
