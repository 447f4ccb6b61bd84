_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# LoRand on the frozen Swin-L (Table 1): two adapters per block, on the outputs
# of the attention and MLP branches before their residual adds; bottleneck n =
# 128, alpha = 12 branches of rank beta = 8 (the official rank) in each
# projection; 8,226,048 trainable backbone parameters (paper: 8.2M).
# LoRand publishes no ADE20K recipe: the learning rate is the ParaX recipe's
# for the same row (3e-4).
model = dict(
    backbone=dict(
        peft=dict(
            type='LoRand', hidden_dim=128, num_branches=12, branch_rank=8)))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
