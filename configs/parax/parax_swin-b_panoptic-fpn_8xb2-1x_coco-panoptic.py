_base_ = [
    '../full/full_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/parax_swin-b.py'
]
# ParaX on the frozen Swin-B (Table 3): 5,242,992 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
