_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 11, row "[3, 5, 7]": Kernels 3, 5, 7 averaged instead of mixed by the
# scale attention (SA). Everything else is the ParaX Swin-B Mask R-CNN recipe.
# 5,176,288 trainable backbone parameters (paper: 5.2M).
peft = dict(scale_attention=False)
model = dict(backbone=dict(peft=peft))
