"""tools/train.py and tools/test.py, end to end on a tiny ADE20K-layout set,
and the functions behind them (trusted checkpoint loading, fp16 checks,
``--out`` / ``--show-dir`` for mmseg and mmdet configs)."""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader

from mmparax.apis import runtime, trusted_loading
from mmparax.apis.trusted_loading import (
    TRUST_ENV,
    UntrustedCheckpointError,
    load_from_safe,
    register_trusted_loader,
    trust_checkpoints,
)
from mmparax.testing import (
    check_ok,
    make_ade20k,
    make_coco_instance,
    run_tool,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'tests', 'configs')
TINY_CFG = osp.join(CONFIGS, 'tiny_parax_swin_upernet_ade20k.py')
TINY_NAME = 'tiny_parax_swin_upernet_ade20k'
DET_CFG = osp.join(CONFIGS, 'tiny_parax_swin_mask-rcnn_coco.py')
PARAX_B_CFG = osp.join(REPO, 'configs', 'parax',
                       'parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py')
MMDET_CFG = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'configs', 'mask_rcnn',
    'mask-rcnn_r50_fpn_1x_coco.py')
SEED = 0


def data_options(data_root, pretrained):
    return [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'model.backbone.init_cfg.checkpoint={pretrained}',
    ]


def state_dict_of(path):
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    return ckpt, ckpt['state_dict']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Tiny data, a Microsoft-layout pretrained Swin, and 4 iterations of
    tools/train.py in the default work dir (checkpoints at 2 and 4)."""
    root = tmp_path_factory.mktemp('tools')
    data_root = make_ade20k(
        str(root / 'ade'),
        num_train=8,
        num_val=4,
        img_size=(64, 64),
        num_classes=150,
        seed=SEED)
    pretrained_sd = tiny_swin_state_dict(seed=SEED)
    pretrained = write_checkpoint(
        str(root / 'pretrain' / 'swin_tiny_microsoft.pth'),
        swin_to_microsoft(pretrained_sd),
        wrapper='model')
    proc = run_tool('train.py', TINY_CFG, *data_options(data_root, pretrained),
                    cwd=root)
    check_ok(proc)
    return dict(
        root=root,
        data_root=data_root,
        pretrained=pretrained,
        pretrained_sd=pretrained_sd,
        work_dir=root / 'work_dirs' / TINY_NAME,
        log=proc.stdout + proc.stderr)


# -- end to end --------------------------------------------------------------


@pytest.mark.e2e
def test_train_keeps_backbone_frozen(trained):
    work_dir = trained['work_dir']
    for name in ('iter_2.pth', 'iter_4.pth', 'last_checkpoint',
                 TINY_NAME + '.py'):
        assert (work_dir / name).exists(), name
    ckpt, state = state_dict_of(work_dir / 'iter_4.pth')
    assert ckpt['meta']['iter'] == 4
    _, state_2 = state_dict_of(work_dir / 'iter_2.pth')

    # every pretrained backbone tensor is saved unchanged
    pretrained = trained['pretrained_sd']
    frozen = [k for k in pretrained if not re.match(r'norm\d\.', k)]
    assert len(frozen) > 100
    for key in frozen:
        assert torch.equal(state['backbone.' + key], pretrained[key]), key

    # adapters and expert centers were trained
    adapters = [
        k for k in state if '.adapter' in k or '.expert_centers.' in k
    ]
    assert adapters
    changed = [k for k in adapters if not torch.equal(state[k], state_2[k])]
    assert len(changed) > len(adapters) // 2
    scales = [k for k in adapters if k.endswith('.layer_scale')]
    assert scales and all(  # initialised at 1.0
        not torch.allclose(state[k], torch.ones_like(state[k]))
        for k in scales)
    assert 'trainable params' in trained['log']  # PEFTCheckHook ran


@pytest.mark.e2e
def test_test_py_loads_runner_checkpoint(trained, tmp_path):
    # a Runner checkpoint outside the work dir, weights-only, no trust
    ckpt = tmp_path / 'elsewhere' / 'iter_4.pth'
    ckpt.parent.mkdir()
    shutil.copy(trained['work_dir'] / 'iter_4.pth', ckpt)
    work_dir, out = tmp_path / 'test_wd', tmp_path / 'preds'
    proc = run_tool(
        'test.py', TINY_CFG, ckpt, '--work-dir', work_dir, '--out', out,
        *data_options(trained['data_root'], trained['pretrained']),
        cwd=tmp_path)
    check_ok(proc)
    assert 'weights_only=False' not in proc.stdout + proc.stderr
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert isinstance(metrics['mIoU'], float)
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert re.search(r'mIoU: \d+\.\d+', proc.stdout + proc.stderr)
    assert len(glob.glob(str(out / '*.png'))) == 4


@pytest.mark.e2e
def test_test_py_refuses_untrusted_foreign_pickle(trained, tmp_path):
    import argparse

    from mmparax.utils.restricted_load import RUNNER_GLOBALS
    with torch.serialization.safe_globals(RUNNER_GLOBALS):
        checkpoint = torch.load(trained['work_dir'] / 'iter_4.pth',
                                weights_only=True)
    checkpoint['meta']['args'] = argparse.Namespace(lr=0.1)  # foreign
    ckpt = tmp_path / 'downloaded.pth'
    torch.save(checkpoint, ckpt)
    proc = run_tool(
        'test.py', TINY_CFG, ckpt, '--work-dir', tmp_path / 'wd',
        *data_options(trained['data_root'], trained['pretrained']),
        cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'UntrustedCheckpointError' in err
    assert f'--trust-checkpoint {osp.realpath(ckpt)}' in err
    assert 'argparse.Namespace' in err and TRUST_ENV in err
    trusted = run_tool(
        'test.py', TINY_CFG, ckpt, '--work-dir', tmp_path / 'wd2',
        '--trust-checkpoint', ckpt,
        *data_options(trained['data_root'], trained['pretrained']),
        cwd=tmp_path)
    check_ok(trusted)
    assert 'weights_only=False' in trusted.stdout + trusted.stderr


@pytest.mark.e2e
def test_resume_continues_from_saved_iteration(trained):
    # runs after the tests reading iter_4.pth; only adds iter_6.pth
    proc = run_tool(
        'train.py', TINY_CFG, '--resume',
        *data_options(trained['data_root'], trained['pretrained']),
        'train_cfg.max_iters=6',
        cwd=trained['root'])
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert re.search(r'resumed epoch: \d+, iter: 4', log), log[-3000:]
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [6/6]' in log
    assert 'Iter(train) [1/6]' not in log
    ckpt, state = state_dict_of(trained['work_dir'] / 'iter_6.pth')
    assert ckpt['meta']['iter'] == 6
    _, state_4 = state_dict_of(trained['work_dir'] / 'iter_4.pth')
    pretrained = trained['pretrained_sd']
    key = 'stages.0.blocks.0.attn.w_msa.qkv.weight'
    assert torch.equal(state['backbone.' + key], pretrained[key])
    assert not torch.equal(state['backbone.expert_centers.0.0.down'],
                           state_4['backbone.expert_centers.0.0.down'])


@pytest.mark.e2e
def test_mmdet_config_train_and_test(tmp_path):
    """The same tools run an mmdet-scope Mask R-CNN config."""
    coco = make_coco_instance(
        str(tmp_path / 'coco'), num_train=4, num_val=2, img_size=(64, 64))
    pretrained_sd = tiny_swin_state_dict(seed=SEED)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin.pth'), swin_to_microsoft(pretrained_sd))
    ann = osp.join(coco, 'annotations', 'instances_val2017.json')
    options = data_options(coco, pretrained) + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
    ]
    check_ok(run_tool('train.py', DET_CFG, *options, cwd=tmp_path))
    work_dir = tmp_path / 'work_dirs' / 'tiny_parax_swin_mask-rcnn_coco'
    _, state = state_dict_of(work_dir / 'iter_2.pth')
    key = 'stages.1.blocks.1.attn.w_msa.qkv.weight'
    assert torch.equal(state['backbone.' + key], pretrained_sd[key])

    out = tmp_path / 'preds.pkl'
    proc = run_tool('test.py', DET_CFG, work_dir / 'iter_2.pth', '--out',
                    out, '--show-dir', 'painted', *options, cwd=tmp_path)
    check_ok(proc)
    metrics_file = sorted(glob.glob(str(work_dir / '*' / '*.json')))[-1]
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert isinstance(metrics['coco/bbox_mAP'], float)
    assert isinstance(metrics['coco/segm_mAP'], float)
    assert out.exists()
    assert len(glob.glob(str(work_dir / '*' / 'painted' / '*.jpg'))) == 2


def load_tool(name):
    """The module of ``tools/<name>.py``, imported from its path."""
    spec = importlib.util.spec_from_file_location(
        f'mmparax_tools_{name}', osp.join(REPO, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- trusted loading ---------------------------------------------------------


class _RunsCode:
    """Unpickling this creates the folder ``path``: arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path, ))


@pytest.fixture
def clean_trust(monkeypatch):
    monkeypatch.setattr(trusted_loading, '_trusted', [])
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        dict(CheckpointLoader._schemes))
    register_trusted_loader()


@pytest.fixture
def pickles(tmp_path):
    """A file with an object that runs code when unpickled, a plain one."""
    marker = tmp_path / 'code_ran'
    unsafe = tmp_path / 'downloads' / 'unsafe.pth'
    unsafe.parent.mkdir()
    torch.save({'state_dict': {'w': torch.ones(2)}, 'x': _RunsCode(
        str(marker))}, unsafe)
    plain = tmp_path / 'downloads' / 'plain.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'iter': 3}},
               plain)
    return marker, unsafe, plain


def test_plain_checkpoint_loads_without_trust(clean_trust, pickles):
    _, _, plain = pickles
    ckpt = CheckpointLoader.load_checkpoint(str(plain), map_location='cpu')
    assert ckpt['meta'] == {'iter': 3}
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_untrusted_pickle_is_refused(clean_trust, pickles, tmp_path):
    marker, unsafe, _ = pickles
    trust_checkpoints(str(tmp_path / 'work_dir'))  # another folder
    with pytest.raises(UntrustedCheckpointError) as info:
        CheckpointLoader.load_checkpoint(str(unsafe), map_location='cpu')
    message = str(info.value)
    assert str(unsafe) in message
    assert 'weights_only=True' in message and 'mkdir' in message
    assert f'--trust-checkpoint {osp.realpath(unsafe)}' in message
    assert TRUST_ENV in message
    assert not marker.exists()


def test_symlink_into_trusted_folder_is_not_trusted(clean_trust, pickles,
                                                    tmp_path):
    marker, unsafe, _ = pickles
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    (work_dir / 'iter_1.pth').symlink_to(unsafe)
    trust_checkpoints(str(work_dir))
    with pytest.raises(UntrustedCheckpointError):
        load_from_safe(str(work_dir / 'iter_1.pth'), 'cpu')
    assert not marker.exists()


@pytest.mark.parametrize('how', ['file', 'folder', 'env'])
def test_trusted_pickle_loads(clean_trust, pickles, monkeypatch, how):
    marker, unsafe, _ = pickles
    if how == 'file':
        trust_checkpoints(str(unsafe))
    elif how == 'folder':
        trust_checkpoints(str(unsafe.parent))
    else:
        monkeypatch.setenv(TRUST_ENV, os.pathsep.join(['/nonexistent',
                                                       str(unsafe)]))
    ckpt = CheckpointLoader.load_checkpoint(str(unsafe), map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert marker.exists()


def test_missing_file(clean_trust, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_from_safe(str(tmp_path / 'nope.pth'), None)


def test_tools_trust_flag_only(clean_trust, tmp_path):
    cfg = runtime.load_config(TINY_CFG)
    assert cfg.work_dir == osp.join('./work_dirs', TINY_NAME)
    hooks = list(cfg.get('custom_hooks', []))
    runtime.setup_checkpoint_trust(cfg, [str(tmp_path / 'a.pth')])
    # the work dir is not trusted: its checkpoints load weights-only
    assert trusted_loading.trust_reason(
        osp.join(cfg.work_dir, 'iter_8.pth')) is None
    assert list(cfg.get('custom_hooks', [])) == hooks
    assert trusted_loading.trust_reason(str(tmp_path / 'a.pth'))
    assert trusted_loading.trust_reason(str(tmp_path / 'b.pth')) is None
    assert trusted_loading.trust_reason('./work_dirs/other/x.pth') is None


# -- fp16 checks -------------------------------------------------------------


def test_fp16_config_check(monkeypatch):
    cfg = Config.fromfile(PARAX_B_CFG)
    assert runtime.is_amp(cfg.optim_wrapper)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    # without CUDA, AmpOptimWrapper becomes its CPU stand-in
    runtime.check_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'mmparax.CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert runtime.is_amp(cfg.optim_wrapper)
    runtime.check_optim_wrapper(cfg)  # idempotent
    assert cfg.optim_wrapper.type == 'mmparax.CPUAmpOptimWrapper'
    # another AMP wrapper than mmengine's is refused, naming the overrides
    cfg.optim_wrapper.type = 'elsewhere.AmpOptimWrapper'
    with pytest.raises(RuntimeError, match='optim_wrapper.type=OptimWrapper'):
        runtime.check_optim_wrapper(cfg)
    # with the override, fp32 on the CPU; AMP-only keys are dropped
    cfg.merge_from_dict({'optim_wrapper.type': 'OptimWrapper'})
    runtime.check_optim_wrapper(cfg)
    assert 'loss_scale' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.constructor == \
        'mmparax.PEFTOptimWrapperConstructor'
    # with CUDA the fp16 recipe is left alone
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config.fromfile(PARAX_B_CFG)
    runtime.check_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_amp_flag(monkeypatch):
    cfg = Config.fromfile(TINY_CFG)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    runtime.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    runtime.check_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'mmparax.CPUAmpOptimWrapper'
    cfg.optim_wrapper.type = 'mmparax.SomethingElse'
    with pytest.raises(ValueError, match='--amp can only replace'):
        runtime.enable_amp(cfg)


# -- arguments and scopes ----------------------------------------------------


@pytest.mark.e2e
def test_resume_argument():
    train = load_tool('train')
    cfg = Config(dict(resume=False, load_from='pre.pth'))
    runtime.apply_resume(cfg, train.parse_args(['c.py', '--resume']).resume)
    assert cfg.resume is True and cfg.load_from is None
    cfg = Config(dict(resume=False, load_from=None))
    args = train.parse_args(['c.py', '--resume', 'x.pth'])
    runtime.apply_resume(cfg, args.resume)
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    cfg = Config(dict(resume=False, load_from='pre.pth'))
    runtime.apply_resume(cfg, train.parse_args(['c.py']).resume)
    assert cfg.resume is False and cfg.load_from == 'pre.pth'
    args = train.parse_args(
        ['c.py', '--trust-checkpoint', 'a', '--trust-checkpoint', 'b'])
    assert args.trust_checkpoint == ['a', 'b']


def test_out_and_show_dir_mmseg():
    cfg = Config.fromfile(TINY_CFG)
    runtime.set_out(cfg, 'preds')
    runtime.set_show_dir(cfg, 'painted')
    assert cfg.test_evaluator.output_dir == 'preds'
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.visualizer.save_dir == 'painted'


def test_out_and_show_dir_mmdet():
    cfg = Config.fromfile(MMDET_CFG)
    assert cfg.default_scope == 'mmdet'
    with pytest.raises(ValueError, match='.pkl'):
        runtime.set_out(cfg, 'preds')
    runtime.set_out(cfg, 'preds.pkl')
    runtime.set_show_dir(cfg, 'painted')
    assert cfg.test_evaluator[-1] == dict(
        type='DumpDetResults', out_file_path='preds.pkl')
    assert cfg.test_evaluator[0].type == 'CocoMetric'
    assert cfg.default_hooks.visualization.test_out_dir == 'painted'
    assert 'save_dir' not in cfg.visualizer


def test_mmdet_dump_metric_builds(tmp_path):
    cfg = Config.fromfile(MMDET_CFG)
    runtime.set_out(cfg, str(tmp_path / 'preds.pkl'))
    from mmengine.registry import METRICS, DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(cfg.test_evaluator[-1])
    assert type(metric).__name__ == 'DumpDetResults'
