_base_ = [
    '../full/full_convnext-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/parax_convnext-b.py'
]
# ParaX on the frozen ConvNeXt-B (Table 2): 6,456,000 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
