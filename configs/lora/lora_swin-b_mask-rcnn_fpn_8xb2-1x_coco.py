_base_ = [
    '../full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the frozen Swin-B (Table 2): rank 112 updates of the attention q
# and v projections (the q and v thirds of the fused qkv layer), alpha = 1
# (scale 1/r, as loralib and the official dense-prediction Swin LoRA), B
# zero-initialised; 5,390,336 trainable backbone parameters (paper: 5.4M).
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        # the update is scaled by alpha / rank = 1/112
        peft=dict(type='LoRA', rank=112, alpha=1, targets=['qkv:qv'])))
