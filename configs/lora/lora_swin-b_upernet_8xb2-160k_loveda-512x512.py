_base_ = [
    '../full/full_swin-b_upernet_8xb2-160k_loveda-512x512.py',
    './_base_/lora_swin-b.py'
]
# Table 10 follows the ADE20K settings (the paper): the method and learning
# rate of its Swin-B ADE20K row. LoRA on the frozen Swin-B on LoveDA (Table
# 10): rank 112 updates of the attention q and v projections (the q and v
# thirds of the fused qkv layer), alpha = 1 (scale 1/r, as loralib and the
# official dense-prediction Swin LoRA), B zero-initialised; 5,390,336 trainable
# backbone parameters (paper: 5.4M). LoRA publishes no dense-prediction recipe:
# the learning rate is the ParaX recipe's for the same row (6e-5).
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
