_base_ = [
    '../_base_/models/upernet_convnext.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# mmpretrain's PoolFormer-S12 through the generic host: its family's hints
# (blocks, the token-mixer and MLP branches, the fc1 / fc2 layers, the output
# norms norm0..norm6) are the defaults of mmparax.AnyBackbone.
# Official sail-sg ImageNet file; its classifier norm and head are dropped.
checkpoint_file = 'pretrain/poolformer_s12.pth.tar'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='mmparax.AnyBackbone',
        backbone=dict(
            type='mmpretrain.PoolFormer',
            arch='s12',  # widths 64, 128, 320, 512; depths 2, 2, 6, 2
            out_indices=(0, 2, 4, 6),
            frozen_stages=-1),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))

optim_wrapper = dict(optimizer=dict(lr=2e-4))

# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
