_base_ = [
    '../full/full_convnext-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# ParaX on the frozen ConvNeXt-B (Table 2): 6,456,000 backbone parameters.
# The adapters' Linear/Conv layers start from a truncated normal (std 0.02),
# as in the reference ConvNeXt.
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16, layer_init='trunc_normal',
            # fp16 adapter maths on CUDA, as the reference recipes
            force_fp16=True)))
