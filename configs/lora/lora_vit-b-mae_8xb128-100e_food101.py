_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_food101.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the frozen MAE ViT-B/16 (Table 4): rank 85 updates of the attention
# q and v projections (the q and v thirds of the fused qkv layer), alpha = 1
# (scale 1/r, as loralib and the official dense-prediction Swin LoRA), B
# zero-initialised; 3,133,440 trainable backbone parameters, 3,902,440 with a
# 1000-class head as the paper counts its ViT-B rows (paper: 3.9M; see
# README).
# LoRA publishes no recipe for these sets: lr 0.4 (0.1 x 1024 / 256) and
# the rest of the recipe are the full sibling's, the ParaX reference's.
model = dict(
    backbone=dict(
        # the update is scaled by alpha / rank = 1/85
        peft=dict(type='LoRA', rank=85, alpha=1, targets=['qkv:qv'])))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
