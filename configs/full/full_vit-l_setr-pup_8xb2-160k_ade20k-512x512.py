_base_ = [
    '../_base_/models/setr-pup_vit-l.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Full fine-tuning of ViT-L/16 with SETR-PUP on ADE20K (Table 7, which follows
# the VPT paper's SETR setting): mmseg's SETR-PUP ADE20K recipe
# (setr_vit-l_pup_8xb2-160k_ade20k-512x512.py). 304,147,456 trainable
# backbone parameters; with the decode head and the three auxiliary heads
# (13,143,640) the whole model trains 317,291,096 = the paper's 317.3M, so
# the paper's # P of Table 7 counts the heads.
# The official ViT-L/16 ImageNet-21K weights (Google's imagenet21k
# ViT-L_16.npz as converted by timm; timm layout, loaded strictly, position
# embeddings resized to 32x32); OpenMMLab-converted files load as well.
checkpoint_file = 'pretrain/jx_vit_large_patch16_224_in21k-606da67d.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))

# mmseg's SETR recipe: SGD lr 0.001, momentum 0.9, no weight decay, the
# heads (every parameter named '*head*') at 10x; fp32, no warm-up
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # leaves frozen parameters (PEFT) out of the optimizer; no-op otherwise
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
# lr(i) = (lr - 1e-4) * (1 - i / 160000)^0.9 + 1e-4 for every parameter
# group (1e-4 is absolute, as mmcv 1.x's poly min_lr of the original SETR
# and VPT runs); PolyLR reaches its last value at step `end - 1`, hence
# 160001 (mmseg 1.x's own config ends at 160000, one step earlier)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=160001,
        by_epoch=False)
]

# mmseg's SETR test pipeline: resize to (2048, 512) keeping the ratio, no
# ResizeToMultiple (the ParaX reference's UperNet pipeline); inference by
# 512x512 sliding windows (stride 341, model.test_cfg)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# 8 GPUs x 2 images = total batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
