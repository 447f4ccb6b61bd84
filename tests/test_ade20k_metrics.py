"""ADE20K evaluation against numbers computed independently from the PNGs.

1. Oracle: the validation set is read through the ADE20K pipeline of
   ``configs/_base_/datasets/ade20k.py``; its ground truth fed back as the
   prediction must score mIoU 100 with mmseg's ``IoUMetric``, and a wrong
   prediction (the majority class everywhere, or every label shifted) must
   score what numpy gives from the annotation PNGs under ADE20K's
   ``reduce_zero_label`` (PNG label 0 -> ignored, label k -> class k - 1).
2. A short real run (``tools/train.py`` then ``tools/test.py``) of the CPU
   demo config on the synthetic set: the reported mIoU equals the one
   numpy computes from the predicted and annotation PNGs, and beats
   predicting the majority class everywhere by a clear margin.
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from mmparax.testing import (
    check_ok,
    make_ade20k,
    run_tool,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ADE20K_CFG = osp.join(REPO, 'configs', '_base_', 'datasets', 'ade20k.py')
DEMO_CFG = osp.join(REPO, 'configs', 'demo',
                    'parax_swin-tiny_upernet_1xb4-300i_demo-64x64.py')
IGNORE = 255


def annotation_pngs(root):
    paths = sorted(
        glob.glob(osp.join(root, 'annotations', 'validation', '*.png')))
    assert paths
    return {
        osp.splitext(osp.basename(p))[0]: np.asarray(Image.open(p))
        for p in paths
    }


def reduce_zero_label(png):
    """ADE20K's reduction: 0 ("other") -> ignore index, k -> k - 1."""
    out = png.astype(np.int64) - 1
    out[png == 0] = IGNORE
    return out


def numpy_miou(pairs, num_classes):
    """mIoU (%) over the classes present in prediction or ground truth,
    ignored pixels left out; ``pairs`` of (prediction, reduced label)."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, label in pairs:
        valid = label != IGNORE
        for c in range(num_classes):
            p, g = (pred == c) & valid, (label == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    seen = union > 0
    return 100.0 * float(np.mean(inter[seen] / union[seen]))


def majority_miou(labels):
    """mIoU (%) of predicting the most frequent valid class everywhere:
    that class scores its pixel share, every other present class 0."""
    counts = np.zeros(256, dtype=np.int64)
    for label in labels:
        counts += np.bincount(label[label != IGNORE].ravel(), minlength=256)
    present = int((counts > 0).sum())
    return int(counts.argmax()), 100.0 * counts.max() / counts.sum() / present


# -- 1. oracle ----------------------------------------------------------------
@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
    """The synthetic validation set read through the ADE20K val pipeline."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    root = make_ade20k(
        str(tmp_path_factory.mktemp('ade') / 'ade20k'),
        num_train=1,
        num_val=6,
        img_size=(48, 80),
        num_classes=12,
        seed=3)
    cfg = Config.fromfile(ADE20K_CFG)
    init_default_scope('mmseg')
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = root
    dataset = DATASETS.build(dataset_cfg)
    return root, cfg, dataset


def evaluate(cfg, dataset, predict):
    """mmseg's IoUMetric of the config on ``predict(gt) -> prediction``."""
    from mmseg.registry import METRICS
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        gt = sample.gt_sem_seg.data
        metric.process({}, [
            dict(
                pred_sem_seg=dict(data=predict(gt)),
                gt_sem_seg=dict(data=gt))
        ])
    return metric.evaluate(len(dataset))


def test_pipeline_labels_are_the_reduced_pngs(val_set):
    root, _, dataset = val_set
    pngs = annotation_pngs(root)
    assert len(dataset) == len(pngs) == 6
    # the set has ignored "other" pixels, or reduce_zero_label is not tested
    assert any((png == 0).any() for png in pngs.values())
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        name = osp.splitext(osp.basename(sample.img_path))[0]
        gt = sample.gt_sem_seg.data
        assert gt.shape == (1, 48, 80)  # at the original size
        np.testing.assert_array_equal(gt[0].numpy(),
                                      reduce_zero_label(pngs[name]))


def test_ground_truth_as_prediction_scores_100(val_set):
    _, cfg, dataset = val_set
    metrics = evaluate(cfg, dataset, lambda gt: gt.clone())
    assert metrics['mIoU'] == 100.0
    assert metrics['aAcc'] == 100.0


def test_wrong_predictions_score_the_numpy_value(val_set):
    root, cfg, dataset = val_set
    labels = [reduce_zero_label(p) for p in annotation_pngs(root).values()]
    majority, expected = majority_miou(labels)
    assert 0 < expected < 50
    metrics = evaluate(cfg, dataset,
                       lambda gt: torch.full_like(gt, majority))
    assert metrics['mIoU'] == pytest.approx(expected, abs=0.006)

    # every valid label shifted to the next class: no overlap anywhere
    def shifted(gt):
        return torch.where(gt == IGNORE, gt, (gt + 1) % 150)

    assert evaluate(cfg, dataset, shifted)['mIoU'] == 0.0


# -- 2. a short learning run --------------------------------------------------
ITERS = 40
ONE_THREAD = dict(OMP_NUM_THREADS='1')
NUM_CLASSES = 8  # the demo config's class subset


@pytest.mark.e2e
def test_short_run_beats_majority_class(tmp_path):
    data_root = make_ade20k(
        str(tmp_path / 'ade20k'),
        num_train=32,
        num_val=8,
        img_size=(64, 64),
        num_classes=NUM_CLASSES,
        seed=0)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin_tiny_microsoft.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=0)))
    options = ['--cfg-options', f'model.backbone.init_cfg.checkpoint='
               f'{pretrained}']
    for loader in ('train', 'val', 'test'):
        options += [
            f'{loader}_dataloader.dataset.data_root={data_root}',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False',
        ]
    options += [
        f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}',
        'param_scheduler.0.end=4',
        'param_scheduler.1.begin=4',
        f'param_scheduler.1.end={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
    ]
    work_dir = tmp_path / 'work_dir'
    check_ok(run_tool('train.py', DEMO_CFG, '--work-dir', work_dir,
                      *options, cwd=tmp_path, env=ONE_THREAD))
    ckpt = work_dir / f'iter_{ITERS}.pth'
    assert ckpt.exists()

    test_dir, out = tmp_path / 'test', tmp_path / 'preds'
    check_ok(run_tool('test.py', DEMO_CFG, ckpt, '--work-dir', test_dir,
                      '--out', out, '--trust-checkpoint', ckpt, *options,
                      cwd=tmp_path, env=ONE_THREAD))
    (metrics_file, ) = glob.glob(str(test_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        reported = json.load(f)['mIoU']

    # the written predictions (class + 1, as ADE20K PNGs) scored by numpy
    pngs = annotation_pngs(data_root)
    pairs = []
    for name, png in pngs.items():
        pred = np.asarray(Image.open(out / f'{name}.png')).astype(np.int64)
        assert pred.shape == png.shape
        assert pred.min() >= 1 and pred.max() <= NUM_CLASSES
        pairs.append((pred - 1, reduce_zero_label(png)))
    assert len(pairs) == 8
    computed = numpy_miou(pairs, NUM_CLASSES)
    assert reported == pytest.approx(computed, abs=0.006), (reported,
                                                            computed)

    _, baseline = majority_miou([label for _, label in pairs])
    assert reported > baseline + 10.0, (reported, baseline)
