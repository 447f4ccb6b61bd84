_base_ = './_base_/upernet_ade20k.py'
# mmpretrain's PoolFormer-S12 through the generic host: its family's hints
# (blocks, the token-mixer and MLP branches, the fc1 / fc2 layers, the output
# norms norm0..norm6) are the defaults of mmparax.AnyBackbone.
# Official sail-sg ImageNet file; its classifier norm and head are dropped.
checkpoint_file = 'pretrain/poolformer_s12.pth.tar'
model = dict(
    backbone=dict(
        backbone=dict(
            type='mmpretrain.PoolFormer',
            arch='s12',  # widths 64, 128, 320, 512; depths 2, 2, 6, 2
            out_indices=(0, 2, 4, 6),
            frozen_stages=-1),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

optim_wrapper = dict(optimizer=dict(lr=2e-4))
