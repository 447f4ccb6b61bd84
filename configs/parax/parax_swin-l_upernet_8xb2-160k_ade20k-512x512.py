_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/parax_swin-l.py'
]
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
