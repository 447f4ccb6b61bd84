_base_ = [
    '../_base_/models/panoptic-fpn.py',
    '../_base_/datasets/coco_panoptic.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py'
]
# Panoptic FPN, COCO 2017 panoptic segmentation, 12 epochs.
# Official Facebook IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/convnext_base_22k_224.pth'
model = dict(
    backbone=dict(
        type='mmparax.ConvNeXt',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='base',  # widths 128, 256, 512, 1024; depths 3, 3, 27, 3
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        # overwritten by the checkpoint's layer scales
        layer_scale_init_value=1.0,
        drop_path_rate=0.2,
        with_cp=False),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# AdamW with fp16 (dynamic loss scale); the whole model is trained.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # no 'backbone' key here: every parameter named *norm* has no decay
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
