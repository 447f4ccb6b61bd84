_base_ = [
    '../_base_/models/upernet_convnext.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Official Facebook IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/convnext_base_22k_224.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.ConvNeXt',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='base',
        drop_path_rate=0.25),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150))

optim_wrapper = dict(optimizer=dict(lr=6e-5))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
