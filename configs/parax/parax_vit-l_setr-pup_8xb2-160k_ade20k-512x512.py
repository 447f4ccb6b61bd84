_base_ = [
    '../full/full_vit-l_setr-pup_8xb2-160k_ade20k-512x512.py',
    './_base_/parax_vit-l.py'
]
model = dict(backbone=dict(peft=_base_.peft, block_groups=[24]))
optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic', optimizer=dict(lr=0.001))
