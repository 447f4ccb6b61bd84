_base_ = [
    '../_base_/models/upernet_swin.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Official Microsoft IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/swin_base_patch4_window7_224_22k.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.ParaXSwin',
        parax=dict(rank=128, kernel_sizes=(3, 5, 7), router_hidden=16),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=7,
        use_abs_pos_embed=False,
        drop_path_rate=0.15,
        patch_norm=True),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150))

# the recipe's optimizer (schedule_160k); frozen parameters are left out
optim_wrapper = dict(
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(lr=6e-5))

# verifies the freeze and logs the trainable parameters
custom_hooks = [dict(type='mmparax.PEFTCheckHook')]

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
