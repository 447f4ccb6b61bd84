_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_loveda-512x512.py',
    './_base_/mona_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. Mona on the frozen Swin-B on LoveDA (Table
# 10): bottleneck r = 90 after the attention and the MLP residuals (two per
# block); 5,220,800 trainable backbone parameters (paper: 5.2M). Learning rate:
# Mona's own ADE20K recipe (UperNet Swin-L,
# ade20k_upernet_swin_large_160k_mona.py: AdamW lr 6e-5 x 5, wd 0.01); Mona
# publishes no Swin-B one.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
