_base_ = '../parax_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 15, "ParaX‡": ParaX without its routed spatial experts, as the
# reference computes it (parax_enable_conv=True, parax_kernel_sizes=None): the
# static 3x3 depthwise convs before and after the bottleneck stay; no routed
# depthwise kernels, cascade scalars or scale attention. Everything else is
# the ParaX Swin-L Mask R-CNN recipe. 6,994,368 trainable backbone parameters
# (paper: 7.0M).
peft = dict(kernel_sizes=())
model = dict(backbone=dict(peft=peft))
