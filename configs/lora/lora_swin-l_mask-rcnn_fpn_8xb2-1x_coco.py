_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the frozen Swin-L (Table 2): rank 112 updates of the attention q and
# v projections (the q and v thirds of the fused qkv layer), alpha = rank
# (scale 1), B zero-initialised; 8,091,264 trainable backbone parameters
# (paper: 8.1M).
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(peft=dict(type='LoRA', rank=112, targets=['qkv:qv'])))
