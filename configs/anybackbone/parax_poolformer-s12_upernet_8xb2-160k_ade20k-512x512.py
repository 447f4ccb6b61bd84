_base_ = [
    './full_poolformer-s12_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# ParaX after every PoolFormer block (post_block). No published recipe for
# this backbone: the settings and the learning rate follow the ConvNeXt-B row
# of the same method. Width 32: half the first stage's channels.
peft = dict(
    type='ParaX', hidden_dim=32, kernel_sizes=(3, 5, 7), router_hidden=16,
    layer_init='trunc_normal', force_fp16=True)
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
