_base_ = '../parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
# Table 14b, row "ReLU": ReLU gates instead of a softmax over the experts.
# Everything else is the ParaX Swin-B Mask R-CNN recipe. 5,194,864 trainable
# backbone parameters (the paper prints no # P for this row).
peft = dict(router_act='relu')
model = dict(backbone=dict(peft=peft))
