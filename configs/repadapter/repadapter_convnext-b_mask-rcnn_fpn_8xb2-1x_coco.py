_base_ = [
    '../full/full_convnext-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/repadapter_convnext-b.py'
]
# RepAdapter publishes no dense-prediction learning rate: the learning rate is
# the ParaX recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(backbone=dict(peft=_base_.peft))
