_base_ = [
    '../_base_/models/vit-b-p16_linear-cls.py',
    '../_base_/datasets/svhn_bs128_224.py',
    '../_base_/schedules/schedule_sgd-coslr_100e.py',
    '../_base_/cls_runtime.py'
]
# Full fine-tuning of the MAE ViT-B/16 on SVHN (Table 4): the recipe of the
# ParaX reference's scripts/train_svhn.sh with --fulltune (drop path 0): 100
# epochs, total batch 1024 (8 GPUs x 128), SGD lr 0.4. Every parameter trains:
# 85,798,656 in the backbone, 7,690 in the head (paper: 86.0M; see README).
# The official MAE release (weights under 'model'); timm, Google and
# OpenMMLab layouts load as well.
checkpoint_file = 'pretrain/mae_pretrain_vit_base.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        drop_path_rate=0.),
    head=dict(num_classes=10))
