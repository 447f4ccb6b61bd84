_base_ = [
    '../full/full_swin-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# LoRand on the frozen Swin-L (Table 3): two adapters per block, on the outputs
# of the attention and MLP branches before their residual adds; bottleneck n =
# 128, alpha = 12 branches of rank beta = 8 (the official rank) in each
# projection; 8,226,048 trainable backbone parameters (paper: 8.2M).
# Learning rate: the inherited AdamW lr 1e-4, wd 0.05, the ParaX recipe's and
# the LoRand author's COCO Swin-B setting (DongshuoYin/CoLin, Cascade Mask
# R-CNN 3x); LoRand publishes no config of its own.
model = dict(
    backbone=dict(
        peft=dict(
            type='LoRand', hidden_dim=128, num_branches=12, branch_rank=8)))
