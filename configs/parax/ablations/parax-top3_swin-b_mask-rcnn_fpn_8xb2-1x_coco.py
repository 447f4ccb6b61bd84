_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 13, row "K = 3": Sparse routing: each gate keeps its 3 largest experts
# in the 18-expert stage 3; the 2-expert stages keep both (K >= M there).
# Everything else is the ParaX Swin-B Mask R-CNN recipe. 5,194,864 trainable
# backbone parameters (the paper prints no # P for this row).
peft = dict(top_k=(None, None, 3, None))
model = dict(backbone=dict(peft=peft))
