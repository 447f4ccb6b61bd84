# 160k iterations (ADE20K recipe); experiments set the lr.
# The reference recipe: AdamW in fp16 with a dynamic loss scale (on a CPU
# pass --cfg-options optim_wrapper.type=OptimWrapper).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    # leaves frozen parameters (PEFT) out of the optimizer; no-op otherwise
    constructor='mmparax.PEFTOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # longest key wins: 'backbone' beats 'norm' (backbone norms keep decay)
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=1.0),
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))

# lr(i) = lr * (1 - i / 160000) * w(i), w(i) = 1e-6 + (1 - 1e-6) * i / 1500
# for i <= 1500 and 1 after (i: iterations done): the poly decay runs over
# all 160k iterations and the linear warm-up multiplies it (mmengine applies
# both in turn), as the mmcv 1.x `poly` policy with `warmup='linear'` of the
# reference. mmengine's LinearLR and PolyLR reach their last value at step
# `end - 1`, hence 1501 and 160001.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=0,
        end=160001,
        by_epoch=False),
]

train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every 8k iterations; the last two are kept, plus the best by mIoU
    # (best_mIoU_iter_N.pth)
    checkpoint=dict(
        type='mmparax.CheckpointHook',
        by_epoch=False,
        interval=8000,
        max_keep_ckpts=2,
        save_best='mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    # RNG states in checkpoints: --resume continues bit-identically
    rng_state=dict(type='mmparax.RNGStateHook'))
