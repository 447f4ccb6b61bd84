_base_ = [
    '../full/full_convnext-l_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/colora_convnext-l.py'
]
# Shared ratio 0.5 and the filter (11x11, sigma 1, scale 0.2) as the official
# code. lr 3e-4 as the ParaX config of this row: CoLoRA's only dense recipe
# (COCO, ConvNeXt-S, lr 2e-4 with layer-wise decay 0.9, multi-scale training)
# does not carry over.
model = dict(backbone=dict(peft=_base_.peft))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
