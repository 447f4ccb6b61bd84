_base_ = './_base_/upernet_ade20k.py'
# mmpretrain's ResNet-50 through the generic host (family hints: Bottleneck
# blocks, their downsample shortcut, the 1x1 convs conv1 / conv3; no output
# norms). Torchvision's ImageNet file (same key names); its fc is dropped.
checkpoint_file = 'pretrain/resnet50-0676ba61.pth'
model = dict(
    backbone=dict(
        backbone=dict(
            type='mmpretrain.ResNet',
            depth=50,  # widths 256, 512, 1024, 2048; depths 3, 4, 6, 3
            out_indices=(0, 1, 2, 3),
            norm_cfg=dict(type='SyncBN', requires_grad=True)),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
