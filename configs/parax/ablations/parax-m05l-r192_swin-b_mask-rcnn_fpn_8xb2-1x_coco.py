_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 5, row "M = L/2, C_hat = 192": One expert per two blocks (rounded, at
# least one), bottleneck width 192. Everything else is the ParaX Swin-B Mask
# R-CNN recipe. 5,327,840 trainable backbone parameters (paper: 5.4M). The knob
# alone does not reach the paper's figure (see README.md).
peft = dict(expert_ratio=0.5, hidden_dim=192)
model = dict(backbone=dict(peft=peft))
