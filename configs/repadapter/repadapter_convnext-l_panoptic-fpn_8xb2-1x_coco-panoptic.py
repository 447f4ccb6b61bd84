_base_ = [
    '../full/full_convnext-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# RepAdapter on the frozen ConvNeXt-L (Table 3): 1x1 C -> 224, dropout 0.1,
# grouped (2) 1x1 224 -> C zero-initialised, scale 1.0 (the official
# segmentation code's), on the input of every block's depthwise conv (one per
# block); 9,131,328 trainable backbone parameters (paper: 9.1M).
# RepAdapter publishes no dense-prediction learning rate: the learning rate is
# the ParaX recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        peft=dict(
            type='RepAdapter', hidden_dim=224, groups=2, scale=1.0,
            dropout=0.1)))
