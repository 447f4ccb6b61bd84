_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_imagenet-r.py',
    './_base_/lorand_vit-b-mae.py'
]
model = dict(backbone=dict(peft=_base_.peft))
