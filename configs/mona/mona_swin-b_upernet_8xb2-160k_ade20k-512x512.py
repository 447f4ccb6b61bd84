_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/mona_swin-b.py'
]
# Learning rate: Mona's own ADE20K recipe (UperNet Swin-L,
# ade20k_upernet_swin_large_160k_mona.py: AdamW lr 6e-5 x 5, wd 0.01); Mona
# publishes no Swin-B one.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
