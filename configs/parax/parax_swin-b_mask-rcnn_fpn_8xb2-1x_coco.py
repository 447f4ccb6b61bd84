_base_ = [
    '../full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py',
    './_base_/parax_swin-b.py'
]
# ParaX on the frozen Swin-B (Table 2): 5,194,864 backbone parameters. The
# reference Swin-B Mask R-CNN recipe: adapter output scale initialised at 1e-5
# and no residual scale / bias.
peft = dict(_base_.peft, layer_scale=1e-5, res_scale=None)
model = dict(backbone=dict(peft=peft))
