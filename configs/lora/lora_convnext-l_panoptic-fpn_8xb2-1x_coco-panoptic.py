_base_ = [
    '../full/full_convnext-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/lora_convnext-l.py'
]
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(backbone=dict(peft=_base_.peft))
