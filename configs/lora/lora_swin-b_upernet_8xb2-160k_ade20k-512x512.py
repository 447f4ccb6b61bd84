_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/lora_swin-b.py'
]
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (6e-5).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
