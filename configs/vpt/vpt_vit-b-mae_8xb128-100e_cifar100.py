_base_ = [
    '../full/full_vit-b-mae_8xb128-100e_cifar100.py',
    '../_base_/peft_runtime.py'
]
# VPT-deep on the frozen MAE ViT-B/16 (Table 4): 10 prompt tokens per block,
# inserted after the class token before every block and dropped after it;
# 92,160 trainable backbone parameters (paper: 0.1M: unlike its other
# ViT-B rows, the paper counts no head here; see README).
# VPT's official code searches the learning rate per data set and gives none
# for these sets: lr 0.4 (0.1 x 1024 / 256) and the rest of the recipe are the
# full sibling's, the ParaX reference's.
model = dict(backbone=dict(peft=dict(type='VPT', num_tokens=10)))
# The reference re-initialises the head weight (truncated normal, std 0.01)
# after loading the backbone: OpenMMLab's init_cfg of the head, not the
# constructor's init (peft_runtime.py's head_init='constructor').
head_init = 'init_cfg'
