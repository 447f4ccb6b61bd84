_base_ = [
    './full_resnet-50_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the two 1x1 convs of every Bottleneck. No published recipe for this
# backbone: the settings and the learning rate follow the ConvNeXt-B row of
# the same method.
peft = dict(type='LoRA', rank=32, alpha=1, targets=['conv1', 'conv3'])
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
