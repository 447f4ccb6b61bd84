_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 14c, row "40": Router hidden width 40 (default 16). Everything else is
# the ParaX Swin-B Mask R-CNN recipe. 5,854,192 trainable backbone parameters
# (paper: 5.9M).
peft = dict(router_hidden=40)
model = dict(backbone=dict(peft=peft))
