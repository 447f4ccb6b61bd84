_base_ = [
    '../_base_/models/panoptic-fpn.py', '../_base_/datasets/coco_panoptic.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py'
]
# Panoptic FPN, COCO 2017 panoptic segmentation, 12 epochs.
# Official Microsoft IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/swin_base_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        type='mmparax.Swin',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        out_indices=(0, 1, 2, 3),  # four FPN inputs
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=7,
        drop_path_rate=0.3),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
