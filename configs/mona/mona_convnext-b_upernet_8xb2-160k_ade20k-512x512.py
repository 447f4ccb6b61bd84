_base_ = [
    '../full/full_convnext-b_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen ConvNeXt-B (Table 1): bottleneck r = 144 after every block
# (one per block); 6,490,752 trainable backbone parameters (paper: 6.5M).
# Mona publishes no ConvNeXt recipe: the learning rate is the ParaX recipe's
# for the same row (3e-4).
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dim=144)))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
