_base_ = [
    '../full/full_convnext-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/parax_convnext-b.py'
]
# ParaX on the frozen ConvNeXt-B (Table 3): 6,456,000 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
