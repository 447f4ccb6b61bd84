_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 6, row "6 layers per group": The 18 blocks of stage 3 split into 3
# expert centers of 6 consecutive blocks (M = 6 each); the other stages keep
# one center. Everything else is the ParaX Swin-B Mask R-CNN recipe. 5,158,144
# trainable backbone parameters (the paper prints no # P for this row).
peft = dict(blocks_per_center=(None, None, 6, None))
model = dict(backbone=dict(peft=peft))
