_base_ = [
    '../full/full_convnext-l_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# LoRA on the frozen ConvNeXt-L (Table 3): rank 32 updates of the two
# pointwise linears of every block, alpha = 1 (scale 1/r, as loralib and the
# official dense-prediction Swin LoRA), B zero-initialised; 8,663,040
# trainable backbone parameters (paper: 8.8M; no integer rank gives it: 32 is
# the closest, 33 gives 8,939,520).
# LoRA publishes no dense-prediction recipe: the learning rate is the ParaX
# recipe's for the same row (the full fine-tuning 1e-4, inherited).
model = dict(
    backbone=dict(
        # the update is scaled by alpha / rank = 1/32
        peft=dict(type='LoRA', rank=32, alpha=1, targets=['fc1', 'fc2'])))
