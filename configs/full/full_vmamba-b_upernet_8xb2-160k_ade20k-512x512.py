_base_ = [
    '../_base_/models/upernet_vmamba.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Official VMamba v2 IN-1K file (weights under 'model'; the optimizer state
# and yacs config saved beside them are skipped without importing yacs).
checkpoint_file = 'pretrain/vssm_base_0229_ckpt_epoch_237.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# VMamba's own ADE20K recipe: lr 6e-5, drop path 0.6.
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.VMamba',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='base',
        drop_path_rate=0.6),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150))

optim_wrapper = dict(optimizer=dict(lr=6e-5))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
