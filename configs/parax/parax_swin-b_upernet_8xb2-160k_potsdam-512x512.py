_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_potsdam-512x512.py',
    '../_base_/peft_runtime.py'
]
# ParaX on the frozen Swin-B, ISPRS Potsdam (Table 10): the settings of the
# ADE20K Swin-B row (parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py), as
# the paper states; 5,242,992 trainable backbone parameters (paper: 5.2M).
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16,
            # fp16 adapter maths on CUDA, as the reference recipes
            force_fp16=True)))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
