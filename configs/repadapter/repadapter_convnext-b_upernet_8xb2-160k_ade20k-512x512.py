_base_ = [
    '../full/full_convnext-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/repadapter_convnext-b.py'
]
# RepAdapter publishes no dense-prediction learning rate: the learning rate is
# the ParaX recipe's for the same row (3e-4).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
