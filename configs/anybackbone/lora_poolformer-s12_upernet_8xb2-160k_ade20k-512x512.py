_base_ = [
    './full_poolformer-s12_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the 1x1 convs of every block's MLP. No published recipe for this
# backbone: the settings and the learning rate follow the ConvNeXt-B row of
# the same method.
peft = dict(type='LoRA', rank=16, alpha=1, targets=['fc1', 'fc2'])
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
