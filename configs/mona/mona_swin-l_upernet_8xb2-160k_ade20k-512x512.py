_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/mona_swin-l.py'
]
# Learning rate and drop path: Mona's own ADE20K recipe (UperNet Swin-L,
# ade20k_upernet_swin_large_160k_mona.py: AdamW lr 6e-5 x 5, wd 0.01, drop path
# 0.2 against 0.3 in the full fine-tuning config).
model = dict(backbone=dict(peft=_base_.peft, drop_path_rate=0.2))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
