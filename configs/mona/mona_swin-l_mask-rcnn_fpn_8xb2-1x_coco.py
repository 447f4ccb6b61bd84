_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen Swin-L (Table 2): bottleneck r = 91 after the attention
# and the MLP residuals (two per block); 7,531,824 trainable backbone
# parameters (paper: 7.5M).
# Learning rate: Mona's own COCO recipe (Cascade Mask R-CNN Swin-B,
# cascade_mask_swin_base_3x_coco_sample_1_bs_16_mona.py: AdamW lr 1e-4, wd
# 0.05), the inherited values.
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dim=91)))
