_base_ = [
    '../full/full_convnext-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen ConvNeXt-B (Table 3): bottleneck r = 144 after every block
# (one per block); 6,490,752 trainable backbone parameters (paper: 6.5M).
# Mona publishes no ConvNeXt recipe: the learning rate is the ParaX recipe's
# for the same row (the full fine-tuning 1e-4, inherited).
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dim=144)))
