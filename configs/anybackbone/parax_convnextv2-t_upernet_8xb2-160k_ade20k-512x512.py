_base_ = [
    './full_convnextv2-t_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# ParaX after every ConvNeXt-V2 block (post_block). No published recipe for
# this backbone: the settings and the learning rate follow the ConvNeXt-B row
# of the same method.
peft = dict(
    type='ParaX', hidden_dim=64, kernel_sizes=(3, 5, 7), router_hidden=16,
    layer_init='trunc_normal', force_fp16=True)
model = dict(backbone=dict(peft=peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
