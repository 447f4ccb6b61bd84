_base_ = [
    '../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# VPT-deep on the frozen Swin-L (Table 2): 10 prompt tokens per block
# (baselines.md) in every attention window; 180,480 trainable backbone
# parameters: the prompts alone (paper: 0.2M).
# VPT publishes no recipe for Swin in dense prediction: its code is for
# classification, with SGD and a learning rate searched per data set,
# which does not carry over to AdamW training the decode head with the
# same rate. The learning rate is the ParaX recipe's for the same row
# (the full fine-tuning 1e-4, inherited), as for every baseline.
model = dict(backbone=dict(peft=dict(type='VPT', num_tokens=10)))
