_base_ = [
    '../full/full_swin-l_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# VPT-deep on the frozen Swin-L (Table 1): 10 prompt tokens per block
# (baselines.md) in every attention window; 180,480 trainable backbone
# parameters: the prompts alone (paper: 0.2M).
# VPT publishes no recipe for Swin in dense prediction: its code is for
# classification, with SGD and a learning rate searched per data set,
# which does not carry over to AdamW training the decode head with the
# same rate. The learning rate is the ParaX recipe's for the same row
# (3e-4), as for every baseline.
model = dict(backbone=dict(peft=dict(type='VPT', num_tokens=10)))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
