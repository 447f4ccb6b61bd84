_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/vpt_swin-l.py'
]
# The learning rate is the ParaX recipe's for the same row (the full fine-
# tuning 1e-4, inherited), as for every baseline.
model = dict(backbone=dict(peft=_base_.peft))
