_base_ = [
    '../full/full_convnext-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/snell_convnext-l.py'
]
# Dropout and drop path 0.1 on the updates as the official scripts. lr 3e-4 as
# the ParaX config of this row: SNELL publishes no dense-prediction recipe.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
