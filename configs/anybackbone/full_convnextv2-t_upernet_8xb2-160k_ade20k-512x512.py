_base_ = './_base_/upernet_ade20k.py'
# timm's ConvNeXt-V2-T through mmpretrain's TIMMBackbone and the generic host
# (family hints for timm's convnextv2_*: ConvNeXtBlock blocks, the conv_dw and
# mlp branches, the 1x1 convs mlp.fc1 / mlp.fc2). timm's FCMAE-pretrained,
# IN-22K fine-tuned file in timm's key layout (stages.0.blocks..., converted on
# load to TIMMBackbone's stages_0...); its head is dropped.
checkpoint_file = 'pretrain/convnextv2_tiny.fcmae_ft_in22k_in1k.pth'
model = dict(
    backbone=dict(
        backbone=dict(
            type='mmpretrain.TIMMBackbone',
            model_name='convnextv2_tiny',  # widths 96-768; depths 3, 3, 9, 3
            features_only=True,
            out_indices=(0, 1, 2, 3)),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        drop_path_rate=0.2),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
