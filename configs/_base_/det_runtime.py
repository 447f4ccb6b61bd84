# Runtime of the COCO (mmdet) experiments
default_scope = 'mmdet'
# registers the mmparax backbones, hooks and optimizer constructors
custom_imports = dict(imports=['mmparax'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every epoch; the last two are kept, plus the best by the first metric
    # of the evaluator ('auto'): coco/bbox_mAP for Mask R-CNN (CocoMetric,
    # bbox before segm), coco_panoptic/PQ for Panoptic FPN
    # (best_coco_bbox_mAP_epoch_N.pth, best_coco_panoptic_PQ_epoch_N.pth)
    checkpoint=dict(
        type='mmparax.CheckpointHook',
        interval=1,
        max_keep_ckpts=2,
        save_best='auto',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'),
    # RNG states in checkpoints (restored at the start of the next epoch)
    rng_state=dict(type='mmparax.RNGStateHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'

load_from = None
resume = False
