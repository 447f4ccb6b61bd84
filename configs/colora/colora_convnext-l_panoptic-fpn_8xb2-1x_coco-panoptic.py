_base_ = [
    '../full/full_convnext-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# CoLoRA on the frozen ConvNeXt-L (Table 3): a low-rank conv branch beside
# every depthwise conv and correlated low-rank updates of the two pointwise
# linears; ranks (32, 32, 32, 128) per stage, 9,410,112 trainable backbone
# parameters (paper: 9.4M). No single rank fits (the conv branch's grouped conv
# needs ranks that divide the widths: 48 gives 9.3M, 64 12.4M). Shared ratio
# 0.5 and the filter (11x11, sigma 1, scale 0.2) as the official code. lr 1e-4
# (from the full config) as the ParaX config of this row: CoLoRA's only dense
# recipe (COCO, ConvNeXt-S, lr 2e-4 with layer-wise decay 0.9, multi-scale
# training) does not carry over.
model = dict(backbone=dict(peft=dict(type='CoLoRA', rank=(32, 32, 32, 128))))
