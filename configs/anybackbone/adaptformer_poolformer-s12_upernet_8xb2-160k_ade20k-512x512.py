_base_ = [
    './full_poolformer-s12_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# AdaptFormer parallel to every block (block_parallel). No published recipe
# for this backbone: the settings and the learning rate follow the ConvNeXt-B
# row of the same method.
peft = dict(type='AdaptFormer', hidden_dim=32, scale=0.1, dropout=0.1)
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
