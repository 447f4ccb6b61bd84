_base_ = '../parax_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 15, "ParaX‡": ParaX without its conv branch (no static depthwise
# convs, no routed depthwise cascade, no scale attention). Everything else is
# the ParaX Swin-L Mask R-CNN recipe. 6,272,448 trainable backbone parameters
# (paper: 7.0M; see README.md for what the paper's figure implies).
model = dict(backbone=dict(peft=dict(with_conv=False)))
