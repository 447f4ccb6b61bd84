_base_ = [
    '../_base_/models/panoptic-fpn.py', '../_base_/datasets/coco_panoptic.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py'
]
# Panoptic FPN, COCO 2017 panoptic segmentation, 12 epochs.
# Official Facebook IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/convnext_base_22k_224.pth'
model = dict(
    backbone=dict(
        type='mmparax.ConvNeXt',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        out_indices=(0, 1, 2, 3),  # four FPN inputs
        arch='base',  # widths 128, 256, 512, 1024; depths 3, 3, 27, 3
        # overwritten by the checkpoint's layer scales
        layer_scale_init_value=1.0,
        drop_path_rate=0.2),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
