_base_ = [
    '../full/full_vmamba-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/snell_vmamba-b.py'
]
model = dict(backbone=dict(peft=_base_.peft, drop_path_rate=0.3))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
