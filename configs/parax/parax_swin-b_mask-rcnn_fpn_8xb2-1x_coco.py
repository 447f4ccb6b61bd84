_base_ = ['../full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py']
# ParaX on the frozen Swin-B (Table 2): 5,194,864 backbone parameters.
# The reference Swin-B Mask R-CNN recipe: adapter output scale initialised
# at 1e-5 and no residual scale / bias.
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16,
            layer_scale=1e-5, res_scale=None)))
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),  # checks the freeze, logs # P
    dict(type='mmparax.PEFTCheckpointHook')  # adapter-only *_peft.pth files
]
