# SETR-PUP with a ViT-L/16 backbone, as mmseg's ADE20K SETR-PUP recipe
# (mmseg configs/setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py and its
# _base_/models/setr_pup.py): a progressive-upsampling head on block 24 and
# three auxiliary heads on blocks 10, 15 and 20. The backbone is mmpretrain's
# VisionTransformer as an mmparax host (real qkv / proj layers for the PEFT
# methods); mmseg's own ViT is not used.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN when not distributed
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    size=(512, 512),
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='mmparax.ViT',
        arch='large',  # 24 blocks, width 1024, 16 heads, MLP 4096
        img_size=512,
        patch_size=16,
        out_type='featmap',  # [B, 1024, H/16, W/16] per output
        out_indices=(9, 14, 19, 23),
        with_cls_token=True,
        # mmseg's SETR ViT has no final norm: the SETR heads normalise
        # their inputs themselves (SETRUPHead.norm)
        final_norm=False,
        # position embeddings resized bilinearly, as mmseg's SETR ViT
        interpolate_mode='bilinear',
        # the ADE20K SETR recipe: no dropout, no drop path
        drop_rate=0.,
        drop_path_rate=0.,
        norm_cfg=dict(type='LN', eps=1e-6)),
    decode_head=dict(
        type='SETRUPHead',
        in_channels=1024,
        channels=256,
        in_index=3,
        num_classes=150,
        dropout_ratio=0,
        norm_cfg=norm_cfg,
        num_convs=4,
        up_scale=2,
        kernel_size=3,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=1024,
            channels=256,
            in_index=i,
            num_classes=150,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=2,
            up_scale=4,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
        for i in (0, 1, 2)
    ],
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
