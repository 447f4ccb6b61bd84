_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the frozen Swin-L (Table 1): rank 112 updates of the attention q
# and v projections (the q and v thirds of the fused qkv layer), alpha = 1
# (scale 1/r, as loralib and the official dense-prediction Swin LoRA), B
# zero-initialised; 8,085,504 trainable backbone parameters (paper: 8.1M).
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (3e-4).
model = dict(
    backbone=dict(
        # the update is scaled by alpha / rank = 1/112
        peft=dict(type='LoRA', rank=112, alpha=1, targets=['qkv:qv'])))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
