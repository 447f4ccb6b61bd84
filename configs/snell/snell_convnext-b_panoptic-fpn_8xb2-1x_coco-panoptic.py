_base_ = [
    '../full/full_convnext-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/snell_convnext-b.py'
]
# Dropout and drop path 0.1 on the updates as the official scripts. lr 1e-4
# (from the full config) as the ParaX config of this row: SNELL publishes no
# dense-prediction recipe.
model = dict(backbone=dict(peft=_base_.peft))
