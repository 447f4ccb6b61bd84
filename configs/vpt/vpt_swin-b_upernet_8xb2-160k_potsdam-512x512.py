_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_potsdam-512x512.py',
    './_base_/vpt_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. VPT-deep on the frozen Swin-B on ISPRS Potsdam
# (Table 10): 10 prompt tokens per block (baselines.md) in every attention
# window; 120,320 trainable backbone parameters: the prompts alone (paper:
# 0.1M). The learning rate is the ParaX recipe's for the same row (6e-5), as
# for every baseline.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
