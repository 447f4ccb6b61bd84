_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/parax_swin-l.py'
]
model = dict(backbone=dict(peft=_base_.peft))
