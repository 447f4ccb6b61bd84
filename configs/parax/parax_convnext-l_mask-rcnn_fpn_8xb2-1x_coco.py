_base_ = [
    '../full/full_convnext-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/parax_convnext-l.py'
]
# ParaX on the frozen ConvNeXt-L (Table 2): 9,156,096 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
