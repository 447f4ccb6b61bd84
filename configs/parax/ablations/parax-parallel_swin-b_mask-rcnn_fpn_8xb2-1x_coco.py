_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 14a, row "Parallel": Parallel multi-kernel convs: every routed conv
# reads the cascade input. Everything else is the ParaX Swin-B Mask R-CNN
# recipe. 5,194,672 trainable backbone parameters (the paper prints no # P for
# this row).
peft = dict(layout='parallel')
model = dict(backbone=dict(peft=peft))
