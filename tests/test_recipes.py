"""The 2.x recipes against the reference's OpenMMLab 1.x runs: the ADE20K
test pipeline, the learning-rate curves and the checkpoint bookkeeping."""
import os.path as osp
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import ParamSchedulerHook
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope

from mmparax.testing import (
    make_ade20k,
    make_coco_instance,
    run_tool,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
# the UperNet recipes (SETR's are tested in tests/test_setr.py)
ADE20K = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.glob('*/*_upernet_*_ade20k-512x512.py'))
COCO = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.glob('*/*_8xb2-1x_coco*.py'))
TINY_CFG = ROOT / 'tests' / 'configs' / 'tiny_parax_swin_upernet_ade20k.py'


def _cfg(name):
    return Config.fromfile(CONFIGS / name)


def test_config_lists():
    own = ('parax/', 'full/')
    assert sum(n.startswith(own) for n in ADE20K) == 10
    assert sum(n.startswith(own) for n in COCO) == 16
    assert all('mask-rcnn' in n or 'panoptic' in n for n in COCO)


# -- ADE20K test pipeline -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('name', ADE20K)
def test_ade20k_test_pipeline(name):
    cfg = _cfg(name)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        pipeline = loader.dataset.pipeline
        assert [t.type for t in pipeline] == [
            'LoadImageFromFile', 'Resize', 'ResizeToMultiple',
            'LoadAnnotations', 'PackSegInputs'
        ]
        resize, multiple, annotations = pipeline[1:4]
        assert (resize.scale, resize.keep_ratio) == ((2048, 512), True)
        assert multiple.size_divisor == 32
        assert annotations.reduce_zero_label


def test_ade20k_512x683_runs_at_512x704_and_is_scored_at_512x683(tmp_path):
    from mmseg.evaluation import IoUMetric
    from mmseg.models.segmentors import BaseSegmentor
    from mmseg.registry import DATASETS

    import mmparax  # noqa: F401
    root = make_ade20k(
        str(tmp_path / 'ade'), num_train=0, num_val=1, img_size=(512, 683),
        num_classes=4, seed=0)
    cfg = Config.fromfile(CONFIGS / '_base_' / 'datasets' / 'ade20k.py')
    init_default_scope('mmseg')
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = root
    sample = DATASETS.build(dataset_cfg)[0]
    inputs, data_sample = sample['inputs'], sample['data_samples']

    # the network sees 512x704; the ground truth stays at the original size
    assert tuple(inputs.shape) == (3, 512, 704)
    assert tuple(data_sample.img_shape) == (512, 704)
    assert tuple(data_sample.ori_shape) == (512, 683)
    gt = data_sample.gt_sem_seg.data
    assert tuple(gt.shape) == (1, 512, 683)
    assert set(gt.unique().tolist()) <= {0, 1, 2, 3, 255}

    # logits of the ground truth at the network's size go back to 512x683
    # (the segmentors' post-processing) and are scored against it
    at_input = F.interpolate(
        gt[None].float(), size=(512, 704), mode='nearest')[0, 0].long()
    valid = at_input[at_input != 255]
    at_input[at_input == 255] = valid.mode().values  # not scored anyway
    logits = F.one_hot(at_input, 4).permute(2, 0, 1)[None].float() * 10
    segmentor = SimpleNamespace(align_corners=False)
    (result, ) = BaseSegmentor.postprocess_result(segmentor, logits,
                                                  [data_sample])
    assert tuple(result.pred_sem_seg.data.shape) == (1, 512, 683)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    metric.process({}, [result.to_dict()])
    scores = metric.compute_metrics(metric.results)
    assert scores['mIoU'] > 95  # only boundary pixels move


# -- learning rate ------------------------------------------------------------


def _schedulers(cfg):
    """The config's schedulers on a one-parameter AdamW at the config's lr,
    built as mmengine's Runner builds them, stepped by ParamSchedulerHook."""
    lr = cfg.optim_wrapper.optimizer.lr
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.AdamW([param], lr=lr))
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
        for s in cfg.param_scheduler
    ]
    runner = SimpleNamespace(param_schedulers=schedulers)
    return lr, wrapper.optimizer.param_groups[0], runner


def mmcv_poly_linear_warmup(base_lr, i, max_iters=160000, power=1.0,
                            min_lr=0.0, warmup_iters=1500,
                            warmup_ratio=1e-6):
    """mmcv 1.x ``lr_config=dict(policy='poly', warmup='linear', ...,
    by_epoch=False)``: the lr of iteration ``i`` (``runner.iter``, set in
    ``before_train_iter``). The warm-up scales the regular poly lr of the
    same iteration."""
    regular = (base_lr - min_lr) * (1 - i / max_iters)**power + min_lr
    if i >= warmup_iters:
        return regular
    k = (1 - i / warmup_iters) * (1 - warmup_ratio)
    return regular * (1 - k)


def mmcv_step_linear_warmup(base_lr, i, epoch, steps=(8, 11), gamma=0.1,
                            warmup_iters=500, warmup_ratio=0.001):
    """mmcv 1.x ``lr_config=dict(policy='step', warmup='linear', ...)``
    (by epoch): the regular lr is set per epoch; for ``runner.iter`` below
    ``warmup_iters`` it is scaled the same way as above."""
    exp = len(steps)
    for n, step in enumerate(steps):
        if epoch < step:
            exp = n
            break
    regular = base_lr * gamma**exp
    if i >= warmup_iters:
        return regular
    k = (1 - i / warmup_iters) * (1 - warmup_ratio)
    return regular * (1 - k)


@pytest.mark.slow
@pytest.mark.parametrize('name', ADE20K)
def test_ade20k_lr_schedule_config(name):
    assert _cfg(name).param_scheduler == [
        dict(
            type='LinearLR',
            start_factor=1e-6,
            by_epoch=False,
            begin=0,
            end=1501),
        dict(
            type='PolyLR',
            eta_min=0.0,
            power=1.0,
            begin=0,
            end=160001,
            by_epoch=False),
    ]


def test_ade20k_lr_curve_equals_the_reference():
    cfg = _cfg('full/full_swin-b_upernet_8xb2-160k_ade20k-512x512.py')
    base_lr, group, runner = _schedulers(cfg)
    hook = ParamSchedulerHook()
    checked = (0, 1, 750, 1499, 1500, 1501, 80000, 159999)
    seen, worst = {}, 0.0
    for i in range(cfg.train_cfg.max_iters):
        lr, ref = group['lr'], mmcv_poly_linear_warmup(base_lr, i)
        worst = max(worst, abs(lr - ref) / ref)
        if i in checked:
            seen[i] = lr
        hook.after_train_iter(runner, i)
    assert worst < 1e-9
    for i in checked:
        assert seen[i] == pytest.approx(
            mmcv_poly_linear_warmup(base_lr, i), rel=1e-9), i
    # written out: the warm-up ends on the poly curve, which spans 0-160k
    assert seen[0] == pytest.approx(6e-5 * 1e-6, rel=1e-9)
    assert seen[1500] == pytest.approx(6e-5 * (1 - 1500 / 160000), rel=1e-9)
    assert seen[80000] == pytest.approx(3e-5, rel=1e-9)
    assert seen[159999] == pytest.approx(6e-5 / 160000, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize('name', COCO)
def test_coco_lr_schedule_config(name):
    assert _cfg(name).param_scheduler == [
        dict(
            type='LinearLR',
            start_factor=0.001,
            by_epoch=False,
            begin=0,
            end=501),
        dict(
            type='MultiStepLR',
            begin=0,
            end=12,
            by_epoch=True,
            milestones=[8, 11],
            gamma=0.1),
    ]


def test_coco_lr_curve_equals_the_reference():
    cfg = _cfg('full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py')
    base_lr, group, runner = _schedulers(cfg)
    hook = ParamSchedulerHook()
    epoch_len = 7330  # COCO train2017 with annotations, 16 images a batch
    checked = {0, 1, 250, 499, 500, 501, epoch_len - 1, epoch_len}
    checked |= {e * epoch_len + d for e in (7, 8, 10, 11) for d in (-1, 0)}
    checked.add(12 * epoch_len - 1)
    seen = {}
    for epoch in range(cfg.train_cfg.max_epochs):
        for j in range(epoch_len):
            i = epoch * epoch_len + j
            if i in checked or i < 600:
                seen[i] = (epoch, group['lr'])
            hook.after_train_iter(runner, j)
        hook.after_train_epoch(runner)
    for i, (epoch, lr) in seen.items():
        assert lr == pytest.approx(
            mmcv_step_linear_warmup(base_lr, i, epoch), rel=1e-9), (i, epoch)
    assert seen[0][1] == pytest.approx(1e-7, rel=1e-9)
    assert seen[250][1] == pytest.approx(1e-4 * (0.001 + 0.999 / 2))
    assert seen[499][1] == pytest.approx(1e-4 * (0.001 + 0.999 * 499 / 500))
    assert seen[500][1] == seen[8 * epoch_len - 1][1] == pytest.approx(1e-4)
    assert seen[8 * epoch_len][1] == pytest.approx(1e-5)
    assert seen[11 * epoch_len][1] == pytest.approx(1e-6)


# -- checkpoints --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('name', ADE20K)
def test_ade20k_checkpoints(name):
    assert _cfg(name).default_hooks.checkpoint == dict(
        type='mmparax.CheckpointHook',
        by_epoch=False,
        interval=8000,
        max_keep_ckpts=2,
        save_best='mIoU',
        rule='greater')


@pytest.mark.slow
@pytest.mark.parametrize('name', COCO)
def test_coco_checkpoints(name):
    cfg = _cfg(name)
    assert cfg.default_hooks.checkpoint == dict(
        type='mmparax.CheckpointHook',
        interval=1,
        max_keep_ckpts=2,
        save_best='auto',
        rule='greater')
    # 'auto' is the first metric the evaluator returns
    if 'panoptic' in name:
        assert cfg.val_evaluator.type == 'CocoPanopticMetric'
    else:
        assert cfg.val_evaluator.type == 'CocoMetric'
        assert cfg.val_evaluator.metric[0] == 'bbox'


def test_coco_best_key_is_bbox_map(tmp_path):
    """CocoMetric (bbox, segm) returns coco/bbox_mAP first."""
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO as COCOApi

    from mmparax.testing import coco_metainfo
    root = make_coco_instance(
        str(tmp_path / 'coco'), num_train=0, num_val=2, img_size=(64, 64),
        crowd_prob=0.0)
    ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
    cfg = _cfg('full/full_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py')
    args = dict(cfg.val_evaluator, ann_file=ann_file)
    assert args.pop('type') == 'CocoMetric'
    metric = CocoMetric(**args)
    metric.dataset_meta = coco_metainfo()
    api = COCOApi(ann_file)
    cat_ids = api.getCatIds(catNms=list(metric.dataset_meta['classes']))
    samples = []
    for img_id in api.getImgIds():
        info = api.loadImgs(img_id)[0]
        anns = api.loadAnns(api.getAnnIds(imgIds=img_id))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in
                 (a['bbox'] for a in anns)]
        samples.append(
            dict(
                img_id=img_id,
                ori_shape=(info['height'], info['width']),
                pred_instances=dict(
                    bboxes=torch.tensor(boxes, dtype=torch.float32),
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor(
                        [cat_ids.index(a['category_id']) for a in anns]),
                    masks=torch.from_numpy(
                        np.stack([api.annToMask(a) for a in anns]).astype(
                            bool)))))
    metric.process({}, samples)
    metrics = metric.evaluate(len(samples))
    assert list(metrics)[0] == 'coco/bbox_mAP'
    assert metrics['coco/bbox_mAP'] == pytest.approx(1.0)


def test_coco_panoptic_best_key_is_pq():
    """CocoPanopticMetric returns coco_panoptic/PQ first; mmengine cannot
    infer a rule for 'PQ', hence rule='greater'."""
    from mmdet.evaluation import CocoPanopticMetric
    from mmdet.evaluation.metrics.coco_panoptic_metric import parse_pq_results
    from mmengine.hooks import CheckpointHook
    part = dict(pq=0.5, sq=0.8, rq=0.6)
    keys = list(parse_pq_results(dict(All=part, Things=part, Stuff=part)))
    assert keys[0] == 'PQ'
    assert CocoPanopticMetric.default_prefix == 'coco_panoptic'
    with pytest.raises(ValueError, match='Cannot infer the rule'):
        CheckpointHook(interval=1, save_best='coco_panoptic/PQ')
    hook = CheckpointHook(interval=1, save_best='auto', rule='greater')
    hook._init_rule(hook.rules, ['coco_panoptic/PQ'])  # what 'auto' does
    assert hook.is_better_than['coco_panoptic/PQ'](50.1, 50.0)


@pytest.mark.e2e
def test_tiny_run_keeps_the_best_checkpoint(tmp_path):
    """The ADE20K bases reach a run: two iterations of the tiny ParaX Swin
    UperNet, validated at the end, write best_mIoU_iter_2.pth."""
    data_root = make_ade20k(
        str(tmp_path / 'ade'), num_train=2, num_val=1, img_size=(64, 64),
        num_classes=150, seed=0)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=0)),
        wrapper='model')
    cfg = Config.fromfile(TINY_CFG)
    hook = cfg.default_hooks.checkpoint
    assert (hook.save_best, hook.rule, hook.max_keep_ckpts) == \
        ('mIoU', 'greater', 2)
    work_dir = tmp_path / 'work'
    proc = run_tool(
        'train.py', TINY_CFG, '--work-dir', work_dir, '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'model.backbone.init_cfg.checkpoint={pretrained}',
        'train_cfg.max_iters=2', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    names = {p.name for p in work_dir.iterdir()}
    assert {'iter_2.pth', 'iter_2_peft.safetensors',
            'best_mIoU_iter_2.pth'} <= names
    assert 'The best checkpoint with' in proc.stdout + proc.stderr
    best = torch.load(
        work_dir / 'best_mIoU_iter_2.pth', map_location='cpu',
        weights_only=False)
    assert best['meta']['iter'] == 2
    assert 'backbone.expert_centers.0.0.down' in best['state_dict']
