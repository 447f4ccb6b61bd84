_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_cifar100.py',
    '../_base_/peft_runtime.py'
]
# LoRand on the frozen MAE ViT-B/16 (Table 4): two adapters per block, on the
# outputs of the attention and MLP branches before their residual adds
# (patch tokens); bottleneck n = 128, alpha = 9 branches of rank beta = 8
# (the official rank) in each projection; 3,145,728 trainable backbone
# parameters, 3,914,728 with a 1000-class head as the paper counts its
# ViT-B rows (paper: 3.9M; see README).
# LoRand publishes no recipe for these sets: lr 0.4 (0.1 x 1024 / 256) and
# the rest of the recipe are the full sibling's, the ParaX reference's.
model = dict(
    backbone=dict(
        peft=dict(
            type='LoRand', hidden_dim=128, num_branches=9, branch_rank=8)))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
