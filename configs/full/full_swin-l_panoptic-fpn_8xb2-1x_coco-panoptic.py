_base_ = ['./full_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py']
# Official Microsoft IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/swin_large_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        embed_dims=192,
        num_heads=[6, 12, 24, 48],
        drop_path_rate=0.3),
    neck=dict(in_channels=[192, 384, 768, 1536]))
