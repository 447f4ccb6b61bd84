_base_ = [
    '../full/full_vit-l_setr-pup_8xb2-160k_ade20k-512x512.py',
    './_base_/vpt_vit-l.py'
]
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=0.001))
