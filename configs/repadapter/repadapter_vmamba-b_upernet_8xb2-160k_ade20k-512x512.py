_base_ = [
    '../full/full_vmamba-b_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# RepAdapter on the frozen VMamba-B (Table 8): 1x1 C -> 174, dropout 0.1,
# grouped (2) 1x1 174 -> C zero-initialised, scale 1.0 (the official
# segmentation code's), on the normalised inputs of the SS2D and of the MLP of
# every block; 5,507,212 trainable backbone parameters (paper: 5.5M).
# The width is ours, fitted to Table 8 (the only even width that gives 5.5M;
# the grouped up projection needs an even one).
# RepAdapter publishes no VMamba recipe: the learning rate is the ParaX
# recipe's for the same row (6e-5, VMamba's own); the drop path stays at the
# full fine-tuning config's 0.6 (the ParaX row lowers it to 0.3, a ParaX
# choice).
model = dict(
    backbone=dict(
        peft=dict(
            type='RepAdapter', hidden_dim=174, groups=2, scale=1.0,
            dropout=0.1)))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
# As the ParaX VMamba-B config: the heads keep OpenMMLab's init_cfg.
head_init = 'init_cfg'
