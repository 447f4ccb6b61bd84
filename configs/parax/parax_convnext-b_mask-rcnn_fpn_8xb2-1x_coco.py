_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py'
]
# Mask R-CNN + FPN, COCO 2017 instance segmentation, 12 epochs.
# Official Facebook IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/convnext_base_22k_224.pth'
model = dict(
    backbone=dict(
        type='mmparax.ParaXConvNeXt',
        # the adapters' Linear/Conv layers start from a truncated normal
        # (std 0.02), as in the reference ConvNeXt; router hidden width 16
        parax=dict(
            rank=128,
            kernel_sizes=(3, 5, 7),
            router_hidden=16,
            layer_init='trunc_normal'),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='base',  # widths 128, 256, 512, 1024; depths 3, 3, 27, 3
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        # overwritten by the checkpoint's layer scales
        layer_scale_init_value=1.0,
        drop_path_rate=0.2,
        with_cp=False),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# the recipe's optimizer (schedule_1x); frozen parameters are left out
optim_wrapper = dict(constructor='mmparax.PEFTOptimWrapperConstructor')

# verifies the freeze and logs the trainable parameters
custom_hooks = [dict(type='mmparax.PEFTCheckHook')]

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
