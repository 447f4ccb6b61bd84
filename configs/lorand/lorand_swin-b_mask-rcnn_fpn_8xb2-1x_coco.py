_base_ = [
    '../full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/lorand_swin-b.py'
]
# Learning rate: the inherited AdamW lr 1e-4, wd 0.05, the ParaX recipe's and
# the LoRand author's COCO Swin-B setting (DongshuoYin/CoLin, Cascade Mask
# R-CNN 3x); LoRand publishes no config of its own.
model = dict(backbone=dict(peft=_base_.peft))
