_base_ = [
    '../full/full_swin-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# RepAdapter on the frozen Swin-L (Table 3): 1x1 C -> 160, dropout 0.1, grouped
# (2) 1x1 160 -> C zero-initialised, scale 1.0 (the official segmentation
# code's), on the normalised inputs of the attention and of the MLP of every
# block; 8,706,816 trainable backbone parameters (paper: 8.7M).
# RepAdapter publishes no dense-prediction learning rate: the learning rate is
# the ParaX recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        peft=dict(
            type='RepAdapter', hidden_dim=160, groups=2, scale=1.0,
            dropout=0.1)))
