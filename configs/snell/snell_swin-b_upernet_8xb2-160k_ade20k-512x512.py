_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/snell_swin-b.py'
]
# SNELL on the frozen Swin-B (Table 1): sparse kernelized updates of q, k, v,
# proj, fc1 and fc2, rank 27 (18 q C per block; 27 prints the paper's 5.8M, 26
# gives 5.6M); 5,847,552 trainable backbone parameters (paper: 5.8M). Dropout
# and drop path 0.1 on the updates as the official scripts. lr 6e-5 as the
# ParaX config of this row: SNELL publishes no dense-prediction recipe.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
