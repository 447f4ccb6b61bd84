_base_ = ['./full_convnext-b_panoptic-fpn_8xb2-1x_coco-panoptic.py']
# Official Facebook IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/convnext_large_22k_224.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        arch='large',  # widths 192, 384, 768, 1536; depths 3, 3, 27, 3
        drop_path_rate=0.25),
    neck=dict(in_channels=[192, 384, 768, 1536]))
