_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 14c, row "8": Router hidden width 8 (default 16). Everything else is
# the ParaX Swin-B Mask R-CNN recipe. 4,975,088 trainable backbone parameters
# (paper: 5.0M).
peft = dict(router_hidden=8)
model = dict(backbone=dict(peft=peft))
