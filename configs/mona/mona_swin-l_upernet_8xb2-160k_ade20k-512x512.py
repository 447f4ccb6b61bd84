_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen Swin-L (Table 1): bottleneck r = 91 after the attention
# and the MLP residuals (two per block); 7,531,824 trainable backbone
# parameters (paper: 7.5M).
# Learning rate and drop path: Mona's own ADE20K recipe (UperNet Swin-L,
# ade20k_upernet_swin_large_160k_mona.py: AdamW lr 6e-5 x 5, wd 0.01, drop
# path 0.2 against 0.3 in the full fine-tuning config).
model = dict(
    backbone=dict(
        peft=dict(type='Mona', hidden_dim=91), drop_path_rate=0.2))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
