_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 12, row "kaiming_uniform": Experts initialised with Kaiming uniform
# instead of a truncated normal. Everything else is the ParaX Swin-B Mask R-CNN
# recipe. 5,194,864 trainable backbone parameters (the paper prints no # P for
# this row).
peft = dict(expert_init='kaiming_uniform')
model = dict(backbone=dict(peft=peft))
