_base_ = [
    '../full/full_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/mona_swin-b.py'
]
# Learning rate: Mona's own COCO recipe (Cascade Mask R-CNN Swin-B,
# cascade_mask_swin_base_3x_coco_sample_1_bs_16_mona.py: AdamW lr 1e-4, wd
# 0.05), the inherited values.
model = dict(backbone=dict(peft=_base_.peft))
