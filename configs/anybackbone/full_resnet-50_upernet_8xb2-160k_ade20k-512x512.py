_base_ = [
    '../_base_/models/upernet_convnext.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# mmpretrain's ResNet-50 through the generic host (family hints: Bottleneck
# blocks, their downsample shortcut, the 1x1 convs conv1 / conv3; no output
# norms). Torchvision's ImageNet file (same key names); its fc is dropped.
checkpoint_file = 'pretrain/resnet50-0676ba61.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='mmparax.AnyBackbone',
        backbone=dict(
            type='mmpretrain.ResNet',
            depth=50,  # widths 256, 512, 1024, 2048; depths 3, 4, 6, 3
            out_indices=(0, 1, 2, 3),
            norm_cfg=dict(type='SyncBN', requires_grad=True)),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[256, 512, 1024, 2048], num_classes=150),
    auxiliary_head=dict(in_channels=1024, num_classes=150))

optim_wrapper = dict(optimizer=dict(lr=1e-4))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
