_base_ = ['./parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py']
# Official Microsoft IN-22K file; OpenMMLab-converted layouts load as well.
checkpoint_file = 'pretrain/swin_large_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        embed_dims=192,
        num_heads=[6, 12, 24, 48],
        drop_path_rate=0.3),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
