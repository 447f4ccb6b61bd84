_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_cifar100.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen MAE ViT-B/16 (Table 4): bottleneck r = 75 after the
# attention and the MLP residuals (two per block, patch tokens); 3,150,360
# trainable backbone parameters, 3,919,360 with a 1000-class head as
# the paper counts its ViT-B rows (paper: 3.9M; see README).
# Mona publishes no recipe for these sets: lr 0.4 (0.1 x 1024 / 256) and
# the rest of the recipe are the full sibling's, the ParaX reference's.
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dim=75)))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
