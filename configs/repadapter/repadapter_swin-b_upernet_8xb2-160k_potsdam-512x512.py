_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_potsdam-512x512.py',
    './_base_/repadapter_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. RepAdapter on the frozen Swin-B on ISPRS
# Potsdam (Table 10): 1x1 C -> 160, dropout 0.1, grouped (2) 1x1 160 -> C zero-
# initialised, scale 1.0 (the official segmentation code's), on the normalised
# inputs of the attention and of the MLP of every block; 5,807,104 trainable
# backbone parameters (paper: 5.8M). RepAdapter publishes no dense-prediction
# learning rate: the learning rate is the ParaX recipe's for the same row
# (6e-5).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
