_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/vpt_swin-l.py'
]
# The learning rate is the ParaX recipe's for the same row (3e-4), as for every
# baseline.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
