_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_loveda-512x512.py',
    './_base_/lorand_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. LoRand on the frozen Swin-B on LoveDA (Table
# 10): two adapters per block, on the outputs of the attention and MLP branches
# before their residual adds; bottleneck n = 128, alpha = 12 branches of rank
# beta = 8 (the official rank) in each projection; 5,903,872 trainable backbone
# parameters (paper: 5.9M). LoRand publishes no ADE20K recipe: the learning
# rate is the ParaX recipe's for the same row (6e-5).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
