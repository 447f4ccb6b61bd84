_base_ = [
    '../full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    '../_base_/peft_runtime.py'
]
# ParaX on the frozen Swin-B (Table 2): 5,194,864 backbone parameters.
# The reference Swin-B Mask R-CNN recipe: adapter output scale initialised
# at 1e-5 and no residual scale / bias.
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16,
            layer_scale=1e-5, res_scale=None,
            # fp16 adapter maths on CUDA, as the reference recipes
            force_fp16=True)))
