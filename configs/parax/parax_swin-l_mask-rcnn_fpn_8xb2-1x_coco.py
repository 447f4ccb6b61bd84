_base_ = ['../full/full_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py']
# ParaX on the frozen Swin-L (Table 2): 7,302,384 backbone parameters.
model = dict(
    backbone=dict(
        peft=dict(
            type='ParaX', rank=128, kernel_sizes=(3, 5, 7),
            router_hidden=16)))
custom_hooks = [
    dict(type='mmparax.PEFTCheckHook'),  # checks the freeze, logs # P
    dict(type='mmparax.PEFTCheckpointHook')  # adapter-only *_peft.pth files
]
