_base_ = [
    '../full/full_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py',
    '../_base_/peft_runtime.py'
]
# ParaX on the frozen Swin-B (Table 3): 5,242,992 backbone parameters.
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16,
            # fp16 adapter maths on CUDA, as the reference recipes
            force_fp16=True)))
