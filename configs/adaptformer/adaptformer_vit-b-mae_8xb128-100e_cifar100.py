_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_cifar100.py',
    './_base_/adaptformer_vit-b-mae.py'
]
model = dict(backbone=dict(peft=_base_.peft))
