_base_ = [
    '../full/full_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    './_base_/vpt_swin-b.py'
]
# VPT-deep on the frozen Swin-B (Table 3): 10 prompt tokens per block
# (baselines.md) in every attention window; 120,320 trainable backbone
# parameters: the prompts alone (paper: 0.1M). The learning rate is the ParaX
# recipe's for the same row (the full fine-tuning 1e-4, inherited), as for
# every baseline.
model = dict(backbone=dict(peft=_base_.peft))
