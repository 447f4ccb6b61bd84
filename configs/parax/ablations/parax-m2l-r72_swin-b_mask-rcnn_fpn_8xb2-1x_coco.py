_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 5, row "M = 2L, C_hat = 72": Two experts per block in every center,
# bottleneck width 72. Everything else is the ParaX Swin-B Mask R-CNN recipe.
# 5,120,528 trainable backbone parameters (paper: 5.4M). The knob alone does
# not reach the paper's figure (see README.md).
peft = dict(expert_ratio=2, hidden_dim=72)
model = dict(backbone=dict(peft=peft))
