_base_ = [
    '../full/full_vmamba-b_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/peft_runtime.py'
]
# Mona on the frozen VMamba-B (Table 8): bottleneck r = 90 after the SS2D and
# the MLP residuals (two per block); 4,556,360 trainable backbone parameters
# (paper: 4.6M). The paper gives no width for VMamba-B: r = 90, as on Swin-B
# (same stage widths), prints its 4.6M.
# Mona publishes no VMamba recipe: the learning rate is the ParaX recipe's for
# the same row (6e-5).
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dim=90)))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
# As the ParaX VMamba-B config: the heads keep OpenMMLab's init_cfg.
head_init = 'init_cfg'
