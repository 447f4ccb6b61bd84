_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/snell_swin-l.py'
]
# Dropout and drop path 0.1 on the updates as the official scripts. lr 1e-4
# (from the full config) as the ParaX config of this row: SNELL publishes no
# dense-prediction recipe.
model = dict(backbone=dict(peft=_base_.peft))
