# ViT-B/16 image classifier of the Table 4 recipes (the ParaX reference's
# image classification code, built on AdaptFormer's and MAE's): the class
# token after the final LayerNorm of the backbone, a BatchNorm without affine
# parameters (MAE's linear-probing head; mmpretrain's ClsBatchNormNeck) and a
# Linear 768 -> classes whose weight starts from a truncated normal of std
# 0.01. The full configs set num_classes, drop_path_rate and the checkpoint.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmparax.ViT',
        arch='base',
        img_size=224,
        patch_size=16,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        drop_rate=0.,
        drop_path_rate=0.,
        out_type='cls_token',
        final_norm=True),
    neck=dict(type='ClsBatchNormNeck', input_features=768, affine=False,
              eps=1e-6),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.01)))
