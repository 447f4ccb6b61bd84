_base_ = [
    '../full/full_vmamba-b_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# LoRand on the frozen VMamba-B (Table 8): two adapters per block, on the
# outputs of the SS2D and MLP branches before their residual adds; bottleneck n
# = 128, alpha = 12 branches of rank beta = 8 (the official rank) in each
# projection; 5,153,536 trainable backbone parameters (paper: 5.2M). The paper
# gives no width for VMamba-B: the Swin setting (same stage widths) prints its
# 5.2M. LoRand publishes no ADE20K recipe: the learning rate is the ParaX
# recipe's for the same row (6e-5).
model = dict(
    backbone=dict(
        peft=dict(
            type='LoRand', hidden_dim=128, num_branches=12, branch_rank=8)))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
# As the ParaX VMamba-B config: the heads keep OpenMMLab's init_cfg.
head_init = 'init_cfg'
