_base_ = [
    '../_base_/models/upernet_vmamba.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Official VMamba v2 IN-1K file (weights under 'model'; the optimizer state
# and yacs config saved beside them are skipped without importing yacs).
checkpoint_file = 'pretrain/vssm_base_0229_ckpt_epoch_237.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# The paper (Table 8) gives no ParaX-specific setting for VMamba-B. Chosen
# here: the ParaX defaults and the Swin-B ADE20K recipe (rank 128, kernels
# 3/5/7, router width 16, lr 6e-5, AdamW wd 0.01, fp16, 160k iterations) and
# drop path 0.3, within the 0.15-0.35 of the paper's ParaX recipes and half of
# VMamba's full fine-tuning 0.6 (the Swin-B / ConvNeXt-B ParaX rates are
# 0.5-0.6x those of their full fine-tuning configs).
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmparax.ParaXVMamba',
        parax=dict(rank=128, kernel_sizes=(3, 5, 7), router_hidden=16),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='base',
        drop_path_rate=0.3),
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
