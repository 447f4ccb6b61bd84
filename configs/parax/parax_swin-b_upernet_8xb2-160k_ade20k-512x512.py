_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/parax_swin-b.py'
]
# ParaX on the frozen Swin-B (Table 1): adapters, expert centers and output
# norms train; 5,242,992 backbone parameters.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
