_base_ = [
    '../full/full_convnext-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# LoRand on the frozen ConvNeXt-L (Table 2): two adapters per block, on the
# input of the block's branch and after the block; bottleneck n = 128, alpha =
# 9 branches of rank beta = 8 (the official rank) in each projection; 9,270,144
# trainable backbone parameters (paper: 9.3M).
# LoRand publishes no ConvNeXt recipe: the learning rate is the ParaX recipe's
# for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        peft=dict(
            type='LoRand', hidden_dim=128, num_branches=9, branch_rank=8)))
