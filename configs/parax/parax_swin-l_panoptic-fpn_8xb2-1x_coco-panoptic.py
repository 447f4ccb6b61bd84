_base_ = [
    '../full/full_swin-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/parax_swin-l.py'
]
model = dict(backbone=dict(peft=_base_.peft))
