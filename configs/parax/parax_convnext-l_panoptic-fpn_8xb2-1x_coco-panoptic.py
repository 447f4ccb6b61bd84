_base_ = [
    '../full/full_convnext-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/parax_convnext-l.py'
]
# ParaX on the frozen ConvNeXt-L (Table 3): 9,156,096 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
