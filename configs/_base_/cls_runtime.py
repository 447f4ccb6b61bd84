# Runtime of the image classification experiments (mmpretrain, Table 4)
default_scope = 'mmpretrain'
# registers the mmparax backbones, hooks and optimizer constructors
custom_imports = dict(imports=['mmparax'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every 10 epochs as the reference (save_freq 10); the last two are kept,
    # plus the best top-1 accuracy: the reference evaluates every epoch and
    # reports its best ("Max accuracy"), best_accuracy_top1_epoch_N.pth
    checkpoint=dict(
        type='mmparax.CheckpointHook',
        interval=10,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # RNG states in checkpoints (restored at the start of the next epoch)
    rng_state=dict(type='mmparax.RNGStateHook'))

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'

load_from = None
resume = False
# the reference seeds every process with seed + rank
randomness = dict(seed=0, diff_rank_seed=True)
