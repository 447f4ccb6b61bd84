_base_ = [
    '../full/full_convnext-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/colora_convnext-b.py'
]
# Shared ratio 0.5 and the filter (11x11, sigma 1, scale 0.2) as the official
# code. lr 1e-4 (from the full config) as the ParaX config of this row:
# CoLoRA's only dense recipe (COCO, ConvNeXt-S, lr 2e-4 with layer-wise decay
# 0.9, multi-scale training) does not carry over.
model = dict(backbone=dict(peft=_base_.peft))
