_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_loveda-512x512.py',
    './_base_/parax_swin-b.py'
]
# ParaX on the frozen Swin-B, LoveDA (Table 10): the settings of the ADE20K
# Swin-B row (parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py), as the paper
# states; 5,242,992 trainable backbone parameters (paper: 5.2M).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
