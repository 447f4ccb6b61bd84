_base_ = [
    '../full/full_convnext-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/mona_convnext-l.py'
]
# Mona publishes no ConvNeXt recipe: the learning rate is the ParaX recipe's
# for the same row (3e-4).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
