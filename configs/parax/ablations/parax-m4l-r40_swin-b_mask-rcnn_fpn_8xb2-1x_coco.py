_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 5, row "M = 4L, C_hat = 40": Four experts per block in every center,
# bottleneck width 40. Everything else is the ParaX Swin-B Mask R-CNN recipe.
# 5,473,488 trainable backbone parameters (paper: 5.5M).
peft = dict(expert_ratio=4, hidden_dim=40)
model = dict(backbone=dict(peft=peft))
