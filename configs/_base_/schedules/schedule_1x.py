# 12 epochs (COCO "1x"), lr x0.1 after epochs 8 and 11
max_epochs = 12
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# lr(i, e) = lr * 0.1^(number of milestones <= e) * w(i) in epoch e after i
# iterations, w(i) = 0.001 + (1 - 0.001) * i / 500 for i <= 500 and 1 after:
# the mmcv 1.x `step` policy with `warmup='linear'`, `warmup_iters=500`,
# `warmup_ratio=0.001` of the reference. mmengine's LinearLR reaches its
# last value at step `end - 1`, hence 501.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=501),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

# The reference recipe: AdamW in fp16 with a dynamic loss scale (on a CPU
# pass --cfg-options optim_wrapper.type=OptimWrapper).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    # leaves frozen parameters (PEFT) out of the optimizer; no-op otherwise
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # no 'backbone' key here: every parameter named *norm* has no decay
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))

# lr was set for a total batch of 16 (8 GPUs x 2 images); --auto-scale-lr
# style scaling is off unless enabled
auto_scale_lr = dict(enable=False, base_batch_size=16)
