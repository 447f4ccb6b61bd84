"""ISPRS Potsdam and LoveDA (the paper's Table 10): the tiny writers, the
dataset bases and the full / ParaX Swin-B UperNet configs.

1. The writers produce what mmseg's converters write (the converters run on
   the same content in the download layout) and what mmseg's
   ``PotsdamDataset`` / ``LoveDADataset`` read: labels after
   ``reduce_zero_label`` are the PNG values minus one, 0 ignored, and the
   ground truth as prediction scores mIoU 100 with ``IoUMetric``.
2. The configs' recipes: mmseg's dataset classes and pipelines, 6 / 7
   classes in both heads, and otherwise the ADE20K Swin-B recipe (160k
   iterations); the documented 80k override gives mmseg's schedule length.
3. The real ParaX Swin-B configs through tools/train.py (two iterations)
   and tools/test.py, changing only data roots, sizes, workers, fp32 and
   the checkpoint (a random Swin-B in the official Microsoft layout).
"""
import glob
import json
import math
import os.path as osp
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mmengine.config import Config
from PIL import Image

from mmparax.apis.peft_checkpoint import load_safetensors
from mmparax.testing import (
    check_ok,
    run_tool,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)
from mmparax.testing.remote_sensing import (
    make_loveda,
    make_loveda_raw,
    make_potsdam,
    make_potsdam_raw,
    potsdam_clip_boxes,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
IGNORE = 255
SETS = {
    'potsdam': dict(
        dataset='PotsdamDataset', num_classes=6, metafile_name='Potsdam',
        data_root='data/potsdam', miou={'full': 79.3, 'parax': 79.3},
        classes=('impervious_surface', 'building', 'low_vegetation', 'tree',
                 'car', 'clutter')),
    'loveda': dict(
        dataset='LoveDADataset', num_classes=7, metafile_name='LoveDA',
        data_root='data/loveDA', miou={'full': 54.8, 'parax': 54.3},
        classes=('background', 'building', 'road', 'water', 'barren',
                 'forest', 'agricultural')),
}
NAME = '{method}/{method}_swin-b_upernet_8xb2-160k_{data}-512x512.py'
ADE = '{method}/{method}_swin-b_upernet_8xb2-160k_ade20k-512x512.py'
# (method, set) -> trainable backbone parameters, # P of the paper (M)
COUNTS = {'full': (86_745_016, '86.8M'), 'parax': (5_242_992, '5.2M')}
CONFIG_CASES = [(m, d) for m in ('full', 'parax') for d in sorted(SETS)]
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
SIZE = 64


def _mmseg_dir():
    import mmseg
    return Path(mmseg.__file__).parent / '.mim'


def _write(data, root, **kwargs):
    make = make_potsdam if data == 'potsdam' else make_loveda
    return make(str(root), **kwargs)


def _files(root):
    return sorted(
        str(p.relative_to(root)) for p in Path(root).rglob('*')
        if p.is_file())


def _reduce_zero_label(png):
    out = png.astype(np.int64) - 1
    out[png == 0] = IGNORE
    return out


# -- 1. writers ---------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize('data', sorted(SETS))
def test_writer_is_what_the_mmseg_converter_writes(data, tmp_path):
    converter = _mmseg_dir() / 'tools' / 'dataset_converters' / f'{data}.py'
    if not converter.is_file():
        pytest.skip(f'mmseg installed without {converter}')
    if data == 'potsdam':
        # non-square tiles with overlapping windows
        kwargs = dict(num_train=2, num_val=1, tile_size=(96, 128), seed=1)
        written = make_potsdam(str(tmp_path / 'ours'), clip_size=64,
                               stride_size=32, **kwargs)
        raw = make_potsdam_raw(str(tmp_path / 'raw'), **kwargs)
        extra = ['--clip_size', '64', '--stride_size', '32']
    else:
        kwargs = dict(num_train=3, num_val=2, num_test=2, img_size=(48, 80),
                      seed=1)
        written = make_loveda(str(tmp_path / 'ours'), **kwargs)
        raw = make_loveda_raw(str(tmp_path / 'raw'), **kwargs)
        extra = []
    out = tmp_path / 'converted'
    proc = subprocess.run(
        [sys.executable, str(converter), raw, '-o', str(out),
         '--tmp_dir', str(tmp_path), *extra],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = _files(written)
    assert files == _files(out)
    for name in files:
        ours, theirs = Image.open(osp.join(written, name)), \
            Image.open(out / name)
        assert ours.mode == theirs.mode == (
            'L' if name.startswith('ann_dir') else 'RGB'), name
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    if data == 'potsdam':
        assert len(files) == 2 * 3 * 4  # img + ann, 3 tiles, 2 x 2 windows
        assert 'img_dir/train/2_10_64_32_128_96.png' in files
        assert 'ann_dir/val/5_15_0_0_64_64.png' in files
    else:
        assert 'img_dir/test/6.png' in files
        assert not any(f.startswith('ann_dir/test') for f in files)


def test_potsdam_windows_of_a_real_tile():
    """The converter's windows on a 6000 x 6000 tile: 12 x 12 per tile,
    3456 / 2016 images for the 24 / 14 tiles (mmseg's documented counts)."""
    boxes = potsdam_clip_boxes(6000, 6000)
    assert len(boxes) == 144
    assert sorted({b[0] for b in boxes}) == \
        [512 * k for k in range(11)] + [5488]
    assert all(x1 - x0 == y1 - y0 == 512 for x0, y0, x1, y1 in boxes)
    assert 24 * len(boxes) == 3456 and 14 * len(boxes) == 2016


def test_writer_argument_errors(tmp_path):
    with pytest.raises(ValueError, match='num_train must be in 0..24'):
        make_potsdam(str(tmp_path), num_train=25)
    with pytest.raises(ValueError, match='clip_size 64 exceeds'):
        make_potsdam(str(tmp_path), tile_size=(48, 96))
    with pytest.raises(ValueError, match='img_size must be at least 16x16'):
        make_loveda(str(tmp_path), img_size=8)
    with pytest.raises(ValueError, match='no_data must be in'):
        make_loveda(str(tmp_path), no_data=2.0)


@pytest.fixture(scope='module')
def read_sets(tmp_path_factory):
    """Each tiny set, and its splits read by mmseg's dataset class through
    the config's own validation pipeline."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    out = {}
    for data in SETS:
        root = _write(data, tmp_path_factory.mktemp(data) / data, seed=2,
                      **(dict(num_train=6, num_val=6) if data == 'potsdam'
                         else dict(num_train=7, num_val=7, no_data=0.5)))
        cfg = Config.fromfile(
            CONFIGS / NAME.format(method='parax', data=data))
        datasets = {}
        for split in ('train', 'val'):
            dataset_cfg = cfg.val_dataloader.dataset.copy()
            dataset_cfg.data_root = root
            dataset_cfg.data_prefix = dict(
                img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
            datasets[split] = DATASETS.build(dataset_cfg)
        out[data] = SimpleNamespace(root=root, cfg=cfg, datasets=datasets)
    return out


@pytest.mark.parametrize('data', sorted(SETS))
def test_mmseg_dataset_reads_the_writer(read_sets, data):
    spec, read = SETS[data], read_sets[data]
    for split, dataset in read.datasets.items():
        assert type(dataset).__name__ == spec['dataset']
        assert dataset.metainfo['classes'] == spec['classes']
        pngs = sorted(glob.glob(osp.join(read.root, 'ann_dir', split,
                                         '*.png')))
        assert len(dataset) == len(pngs) > 0
        seen_ignored = False
        for i in range(len(dataset)):
            sample = dataset[i]['data_samples']
            name = osp.basename(sample.img_path)
            assert osp.basename(sample.seg_map_path) == name
            assert sample.img_path == osp.join(read.root, 'img_dir', split,
                                               name)
            png = np.asarray(
                Image.open(osp.join(read.root, 'ann_dir', split, name)))
            assert png.max() <= spec['num_classes']
            gt = sample.gt_sem_seg.data[0].numpy()
            assert gt.shape == png.shape == (64, 64)
            np.testing.assert_array_equal(gt, _reduce_zero_label(png))
            assert set(np.unique(gt)) <= \
                set(range(spec['num_classes'])) | {IGNORE}
            seen_ignored |= bool((gt == IGNORE).any())
        # boundaries / no-data are there, or the reduction is not tested
        assert seen_ignored, split


@pytest.mark.parametrize('data', sorted(SETS))
def test_ground_truth_as_prediction_scores_100(read_sets, data):
    from mmseg.registry import METRICS
    read = read_sets[data]
    dataset = read.datasets['val']
    metric = METRICS.build(read.cfg.val_evaluator)
    metric.dataset_meta = dataset.metainfo
    present = set()
    for i in range(len(dataset)):
        gt = dataset[i]['data_samples'].gt_sem_seg.data
        present |= set(torch.unique(gt).tolist()) - {IGNORE}
        metric.process({}, [
            dict(pred_sem_seg=dict(data=gt.clone()), gt_sem_seg=dict(data=gt))
        ])
    # every class is in the ground truth: the 100 averages all of them
    assert present == set(range(SETS[data]['num_classes']))
    metrics = metric.evaluate(len(dataset))
    assert metrics['mIoU'] == 100.0 and metrics['aAcc'] == 100.0


# -- 2. configs ---------------------------------------------------------------


def _without_classes(model):
    model = model.copy()
    for head in ('decode_head', 'auxiliary_head'):
        model[head] = {k: v for k, v in model[head].items()
                       if k != 'num_classes'}
    return model


@pytest.mark.parametrize('method,data', CONFIG_CASES)
def test_recipe_is_the_ade20k_swin_b_one_on_the_set(method, data):
    spec = SETS[data]
    cfg = Config.fromfile(CONFIGS / NAME.format(method=method, data=data))
    ade = Config.fromfile(CONFIGS / ADE.format(method=method))
    # mmseg's dataset class, converter layout and 512 crops
    for loader, split in ((cfg.train_dataloader, 'train'),
                          (cfg.val_dataloader, 'val'),
                          (cfg.test_dataloader, 'val')):
        dataset = loader.dataset
        assert dataset.type == f'mmparax.{spec["dataset"]}'
        assert dataset.data_root == spec['data_root']
        assert dataset.data_prefix == dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
        loads = [t for t in dataset.pipeline if t.type == 'LoadAnnotations']
        assert len(loads) == 1 and loads[0].reduce_zero_label
    assert cfg.train_dataloader.dataset.pipeline[3].crop_size == (512, 512)
    assert cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.model.decode_head.num_classes == spec['num_classes']
    assert cfg.model.auxiliary_head.num_classes == spec['num_classes']
    assert cfg.val_evaluator == dict(
        type='mmparax.IoUMetric', iou_metrics=['mIoU'])
    # the ADE20K Swin-B recipe: model but for the classes, optimizer,
    # 160k schedule, hooks, batch layout (8 GPUs x 2)
    assert _without_classes(cfg.model) == _without_classes(ade.model)
    assert cfg.checkpoint_file == ade.checkpoint_file
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'val_cfg',
                'test_cfg', 'default_hooks', 'default_scope',
                'custom_imports', 'env_cfg', 'randomness'):
        assert cfg.get(key) == ade.get(key), key
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.model.backbone.drop_path_rate == 0.15
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.val_dataloader.batch_size == cfg.test_dataloader.batch_size \
        == 1
    assert set(cfg.keys()) == set(ade.keys())
    if method == 'parax':
        full = Config.fromfile(CONFIGS / NAME.format(method='full',
                                                     data=data))
        assert cfg.head_init == 'constructor'
        assert set(cfg.keys()) == set(full.keys()) | {'custom_hooks',
                                                      'head_init', 'peft'}
        assert cfg.peft == cfg.model.backbone.peft
        backbone = cfg.model.backbone.copy()
        assert backbone.pop('peft') == ade.model.backbone.peft
        assert backbone == full.model.backbone
        assert cfg.train_dataloader == full.train_dataloader
    else:
        assert 'peft' not in cfg.model.backbone


@pytest.mark.parametrize('data', sorted(SETS))
def test_dataset_base_uses_mmseg_pipelines(data):
    theirs_file = _mmseg_dir() / 'configs' / '_base_' / 'datasets' / \
        f'{data}.py'
    if not theirs_file.is_file():
        pytest.skip(f'mmseg installed without {theirs_file}')
    ours = Config.fromfile(CONFIGS / '_base_' / 'datasets' / f'{data}.py')
    theirs = Config.fromfile(theirs_file)
    # mmparax's data sets and metric: mmseg's, with errors that name files
    assert ours.dataset_type == f'mmparax.{theirs.dataset_type}'
    assert ours.val_evaluator == dict(
        theirs.val_evaluator, type=f'mmparax.{theirs.val_evaluator.type}')
    for key in ('data_root', 'crop_size', 'train_pipeline', 'test_pipeline'):
        assert ours[key] == theirs[key], key
    for loader in ('train_dataloader', 'val_dataloader'):
        ours_ds, theirs_ds = ours[loader].dataset, theirs[loader].dataset
        assert ours_ds.pop('type') == f'mmparax.{theirs_ds.pop("type")}'
        # evaluation tolerates labels beyond the classes, training does not
        assert ours_ds.pop('test_mode', False) == (loader == 'val_dataloader')
        assert ours_ds == theirs_ds, loader
        assert ours[loader].sampler == theirs[loader].sampler


def _documented_80k_options():
    text = (CONFIGS / '_base_' /
            'upernet_swin-b_160k_remote-sensing.py').read_text()
    (line, ) = [
        line for line in text.splitlines() if '--cfg-options' in line
    ]
    return shlex.split(line.lstrip('# '))[1:]


def test_documented_80k_override_gives_a_full_80k_poly_schedule():
    """The one-line override in the base: mmseg's 80k iterations, the
    warm-up, then the poly decay reaching 0 at 80k (the ADE20K curve of
    tests/test_recipes.py, over 80k iterations)."""
    from mmengine.hooks import ParamSchedulerHook
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    options = dict(o.split('=', 1) for o in _documented_80k_options())
    assert options == {'train_cfg.max_iters': '80000',
                       'param_scheduler.1.end': '80001'}
    cfg = Config.fromfile(CONFIGS / NAME.format(method='parax',
                                                data='potsdam'))
    cfg.merge_from_dict({k: int(v) for k, v in options.items()})
    assert cfg.train_cfg.max_iters == 80000
    lr = cfg.optim_wrapper.optimizer.lr
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.AdamW([param], lr=lr))
    runner = SimpleNamespace(param_schedulers=[
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
        for s in cfg.param_scheduler
    ])
    group, hook = wrapper.optimizer.param_groups[0], ParamSchedulerHook()

    def reference(i):  # mmcv 1.x poly with linear warm-up, over 80k
        regular = lr * (1 - i / 80000)
        if i >= 1500:
            return regular
        return regular * (1 - (1 - i / 1500) * (1 - 1e-6))

    checked = {0, 1, 1499, 1500, 40000, 79999}
    for i in range(cfg.train_cfg.max_iters):
        if i in checked or i % 997 == 0:
            assert group['lr'] == pytest.approx(reference(i), rel=1e-9), i
        hook.after_train_iter(runner, i)
    assert reference(79999) == pytest.approx(lr / 80000, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize('method,data', CONFIG_CASES)
def test_backbone_counts_and_metafile(method, data):
    from mmengine.registry import MODELS, init_default_scope

    import mmparax  # noqa: F401
    name = NAME.format(method=method, data=data)
    cfg = Config.fromfile(CONFIGS / name)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None  # never load the checkpoint
    backbone = MODELS.build(cfg.model.backbone)
    trainable = sum(p.numel() for p in backbone.parameters()
                    if p.requires_grad)
    del backbone
    count, paper = COUNTS[method]
    assert trainable == count

    meta = yaml.safe_load((CONFIGS / method / 'metafile.yml').read_text())
    (model, ) = [m for m in meta['Models']
                 if m['Config'] == f'configs/{name}']
    assert model['Name'] == Path(name).stem
    assert model['Metadata']['Trainable Parameters'] == paper
    assert model['Metadata']['Training Data'] == SETS[data]['metafile_name']
    assert str(model['Metadata']['Paper Table']) == '10'
    assert model['Results'] == [
        dict(Task='Semantic Segmentation',
             Dataset=SETS[data]['metafile_name'],
             Metrics=dict(mIoU=SETS[data]['miou'][method]))
    ]


# -- 3. the real ParaX configs, end to end ----------------------------------


@pytest.fixture(scope='module')
def e2e_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('remote_sensing_e2e')
    data_roots = {
        'potsdam': make_potsdam(
            str(root / 'potsdam'), num_train=2, num_val=1,
            tile_size=(SIZE, SIZE), clip_size=SIZE, seed=0),
        'loveda': make_loveda(
            str(root / 'loveDA'), num_train=2, num_val=1,
            img_size=(SIZE, SIZE), seed=0),
    }
    swin_b = tiny_swin_state_dict(seed=0, drop_path_rate=0.0, **SWIN_B)
    checkpoint = write_checkpoint(
        str(root / 'swin_base_patch4_window7_224_22k.pth'),
        swin_to_microsoft(swin_b, num_classes=None))
    common = [
        'optim_wrapper.type=OptimWrapper',  # fp32 on the CPU
        f'model.backbone.init_cfg.checkpoint={checkpoint}',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
        'default_hooks.logger.interval=1', 'randomness.seed=0',
        f'model.data_preprocessor.size=({SIZE},{SIZE})',
        # RandomResize / RandomCrop are the third / fourth training steps,
        # Resize the second test step
        f'train_dataloader.dataset.pipeline.2.scale=({SIZE},{SIZE})',
        f'train_dataloader.dataset.pipeline.3.crop_size=({SIZE},{SIZE})',
        f'val_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})',
        f'test_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})',
    ]
    for split in ('train', 'val', 'test'):
        common += [f'{split}_dataloader.num_workers=0',
                   f'{split}_dataloader.persistent_workers=False']
    options = {
        data: ['--cfg-options', *common] + [
            f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')
        ]
        for data, data_root in data_roots.items()
    }
    return dict(options=options, swin_b=swin_b)


@pytest.mark.e2e
@pytest.mark.parametrize('data', sorted(SETS))
def test_parax_config_two_iterations_then_test(e2e_assets, data, tmp_path):
    spec = SETS[data]
    config = CONFIGS / NAME.format(method='parax', data=data)
    options = e2e_assets['options'][data]
    work_dir = tmp_path / 'work_dir'
    env = dict(OMP_NUM_THREADS='1')
    proc = run_tool('train.py', config, '--work-dir', work_dir, *options,
                    cwd=tmp_path, env=env)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'converting a' in log  # Microsoft layout converted, loaded
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'Iter(train) [2/2]' in log

    state = torch.load(work_dir / 'iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    # the real model: Swin-B widths, the set's classes in both heads
    assert state['backbone.norm3.weight'].shape == (1024, )
    assert state['decode_head.conv_seg.weight'].shape[0] == \
        spec['num_classes']
    assert state['auxiliary_head.conv_seg.weight'].shape[0] == \
        spec['num_classes']
    # every pretrained tensor untouched (the output norms norm<i> are new)
    pretrained = {
        'backbone.' + k: v
        for k, v in e2e_assets['swin_b'].items()
        if not re.match(r'norm\d\.', k)
    }
    for key, value in pretrained.items():
        assert torch.equal(state[key], value), key
    peft = load_safetensors(
        str(work_dir / 'iter_2_peft.safetensors'))['state_dict']
    assert any('expert_centers' in k for k in peft)
    assert not set(peft) & set(pretrained)

    proc = run_tool('test.py', config, work_dir / 'iter_2.pth',
                    '--work-dir', work_dir, *options, cwd=tmp_path, env=env)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    # the per-class table names the set's classes
    assert all(name in log for name in spec['classes'])
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        miou = json.load(f)['mIoU']
    assert math.isfinite(miou) and 0.0 <= miou <= 100.0
