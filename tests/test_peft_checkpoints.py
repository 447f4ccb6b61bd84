"""Checkpoints that fit: strict loading in training and evaluation, PEFT
(adapter-only) checkpoints written during training and exported from full
ones, evaluated to the same metrics."""
import glob
import json
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmparax.apis.peft_checkpoint import (
    PEFT_META,
    checkpoint_problems,
    load_safetensors,
    peft_checkpoint,
    recorded_config,
    save_peft_checkpoint,
    settings_problems,
)
from mmparax.testing import (
    check_ok,
    make_ade20k,
    run_tool,
    swin_to_microsoft,
    tiny_convnext_state_dict,
    tiny_swin_state_dict,
    write_checkpoint,
)
from mmparax.utils.safetensors_file import write_safetensors

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CFG = osp.join(REPO, 'tests', 'configs',
                    'tiny_parax_swin_upernet_ade20k.py')
B_CFG = osp.join(REPO, 'configs', 'parax',
                 'parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py')


def options(data_root, pretrained, *extra):
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'model.backbone.init_cfg.checkpoint={pretrained}',
        'train_cfg.max_iters=2', *extra
    ]


def metrics_of(work_dir):
    """The metrics of a test run (not its timings)."""
    (path, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(path) as f:
        metrics = json.load(f)
    assert {'mIoU', 'aAcc', 'mAcc'} <= set(metrics)
    return {k: v for k, v in metrics.items() if 'time' not in k}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """Two iterations of the tiny ParaX Swin UperNet (a checkpoint at 2)."""
    root = tmp_path_factory.mktemp('peft_ckpt')
    data_root = make_ade20k(
        str(root / 'ade'), num_train=4, num_val=3, img_size=(64, 64),
        num_classes=150, seed=0)
    pretrained = write_checkpoint(
        str(root / 'swin_ms.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=0)),
        wrapper='model')
    work_dir = root / 'work'
    check_ok(
        run_tool('train.py', TINY_CFG, '--work-dir', work_dir,
                 *options(data_root, pretrained), cwd=root))
    return dict(root=root, data_root=data_root, pretrained=pretrained,
                work_dir=work_dir)


def evaluate(run, checkpoint, tmp_path, *extra, pretrained=None,
             config=TINY_CFG):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return run_tool(
        'test.py', *([config] if config else []), checkpoint, '--work-dir',
        tmp_path / 'test', '--trust-checkpoint', checkpoint,
        *options(run['data_root'], pretrained or run['pretrained'], *extra),
        cwd=tmp_path)


@pytest.mark.e2e
def test_peft_checkpoint_written_and_evaluated_like_the_full_one(
        run, tmp_path):
    full = run['work_dir'] / 'iter_2.pth'
    small = run['work_dir'] / 'iter_2_peft.safetensors'
    assert full.exists() and small.exists()
    assert not (run['work_dir'] / 'iter_2_peft.pth').exists()
    checkpoint = load_safetensors(str(small))
    info = checkpoint['meta'][PEFT_META]
    assert info['backbone'] == 'Swin' and info['method'].startswith('ParaX(')
    cfg = Config.fromfile(TINY_CFG)
    assert info['peft'] == json.loads(json.dumps(cfg.model.backbone.peft))
    assert info['host'] == dict(type=cfg.model.backbone.type,
                                arch=cfg.model.backbone.get('arch'))
    meta = checkpoint['meta']
    assert meta['dataset_meta']['classes'][:2] == ['wall', 'building']
    assert len(meta['dataset_meta']['palette']) == 150
    assert meta['mmparax_version'] and meta['full_checkpoint'] == 'iter_2.pth'
    assert str(run['data_root']) in meta['cfg']  # the resolved config
    assert not any(
        k.startswith('backbone.') and '.adapter' not in k
        and 'expert_centers' not in k and not re.match(r'backbone\.norm\d',
                                                       k)
        for k in checkpoint['state_dict'])
    assert os.path.getsize(small) < os.path.getsize(full) / 2

    proc_full = evaluate(run, full, tmp_path / 'full')
    proc_small = evaluate(run, small, tmp_path / 'small')
    check_ok(proc_full)
    check_ok(proc_small)
    assert 'Load PEFT checkpoint' in proc_small.stdout + proc_small.stderr
    # the frozen keys it leaves out are not reported as missing
    for proc in (proc_full, proc_small):
        assert 'do not match exactly' not in proc.stdout + proc.stderr
        assert 'missing keys' not in proc.stdout + proc.stderr
    assert metrics_of(tmp_path / 'small' / 'test') == \
        metrics_of(tmp_path / 'full' / 'test')


@pytest.mark.e2e
def test_export_equals_the_file_written_in_training(run, tmp_path):
    out = tmp_path / 'exported.safetensors'
    proc = run_tool(
        osp.join('model_converters', 'export_peft.py'), TINY_CFG,
        run['work_dir'] / 'iter_2.pth', out, '--trust-checkpoint',
        run['work_dir'], cwd=tmp_path)
    check_ok(proc)
    assert 'MiB' in proc.stdout
    # the upstream notices the other tools hide
    assert 'avg_non_ignore' not in proc.stderr
    assert 'build_loss' not in proc.stderr
    exported = load_safetensors(str(out))
    written = load_safetensors(str(run['work_dir'] /
                                   'iter_2_peft.safetensors'))
    assert exported['state_dict'].keys() == written['state_dict'].keys()
    for key, value in written['state_dict'].items():
        assert torch.equal(exported['state_dict'][key], value), key
    for key in ('pretrained_fingerprint', 'peft', 'host'):
        assert exported['meta'][PEFT_META][key] == \
            written['meta'][PEFT_META][key]
    assert exported['meta']['dataset_meta'] == \
        written['meta']['dataset_meta']


@pytest.mark.e2e
def test_a_checkpoint_of_another_model_stops_evaluation(run, tmp_path):
    other = write_checkpoint(
        str(tmp_path / 'convnext.pth'),
        {'backbone.' + k: v for k, v in tiny_convnext_state_dict().items()},
        wrapper='state_dict')
    proc = evaluate(run, other, tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'CheckpointMismatchError' in err and 'does not fit' in err
    assert 'keys of the model are missing from the checkpoint' in err
    assert 'checkpoint keys match nothing the model loads' in err
    assert 'backbone.downsample_layers.0.0.weight' in err  # ConvNeXt's
    assert '--partial-load' in err
    assert 'Iter(test)' not in proc.stdout + err  # before the first image
    # asked for explicitly, what fits is loaded and the rest listed
    flagged = run_tool(
        'test.py', TINY_CFG, other, '--work-dir', tmp_path / 'flagged',
        '--partial-load',
        *options(run['data_root'], run['pretrained']), cwd=tmp_path)
    check_ok(flagged)
    assert 'partial_load=True' in flagged.stdout + flagged.stderr


@pytest.mark.e2e
def test_another_width_stops_evaluation_and_resume(run, tmp_path):
    hidden4 = ['model.backbone.peft.hidden_dim=4']
    proc = evaluate(run, run['work_dir'] / 'iter_2.pth', tmp_path, *hidden4)
    assert proc.returncode != 0
    assert 'shapes differ' in proc.stderr
    assert 'adapter1.proj.weight: checkpoint (8, 8) vs model (4, 4)' \
        in proc.stderr
    small = evaluate(run, run['work_dir'] / 'iter_2_peft.safetensors',
                     tmp_path / 's', *hidden4)
    assert small.returncode != 0 and 'shapes differ' not in small.stderr
    assert 'other method settings' in small.stderr
    assert 'peft.hidden_dim: file 8 vs config 4' in small.stderr
    assert 'Iter(test)' not in small.stdout
    resumed = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'resume', '--resume',
        run['work_dir'] / 'iter_2.pth', '--trust-checkpoint',
        run['work_dir'],
        *options(run['data_root'], run['pretrained'], *hidden4,
                 'train_cfg.max_iters=4'), cwd=tmp_path)
    assert resumed.returncode != 0
    assert 'does not fit' in resumed.stderr
    assert 'optimizer' not in resumed.stderr.split('does not fit')[0][-300:]


@pytest.mark.e2e
def test_peft_checkpoint_needs_its_pretrained_backbone(run, tmp_path):
    other = write_checkpoint(
        str(tmp_path / 'other_swin.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=1)),
        wrapper='model')
    proc = evaluate(run, run['work_dir'] / 'iter_2_peft.safetensors',
                    tmp_path, pretrained=other)
    assert proc.returncode != 0
    assert 'fingerprint' in proc.stderr and str(other) in proc.stderr
    full = evaluate(run, run['work_dir'] / 'iter_2_peft.safetensors',
                    tmp_path / 'f')
    check_ok(full)


@pytest.mark.e2e
def test_resume_in_an_empty_work_dir_says_so(run, tmp_path):
    proc = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'empty', '--resume',
        *options(run['data_root'], run['pretrained'],
                 'train_cfg.max_iters=1'), cwd=tmp_path)
    check_ok(proc)
    assert 'holds no checkpoint to resume from' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_problems_and_sizes_of_swin_b():
    """Swin-B ParaX UperNet: the PEFT checkpoint is a fraction of the
    full one, and each kind is checked against the right key set."""
    import mmparax  # noqa: F401
    cfg = Config.fromfile(B_CFG)
    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    full = model.state_dict()
    small = peft_checkpoint(model)['state_dict']

    def size(sd):
        return sum(v.numel() * v.element_size() for v in sd.values())

    assert size(small) < size(full) / 2
    assert checkpoint_problems(model, full, peft=False) == []
    assert checkpoint_problems(model, small, peft=True) == []
    (missing, ) = checkpoint_problems(model, small, peft=False)
    assert 'missing' in missing and 'backbone.patch_embed' in missing
    (unexpected, ) = checkpoint_problems(model, full, peft=True)
    assert 'match nothing' in unexpected


@pytest.mark.e2e
def test_peft_files_follow_max_keep_ckpts(run, tmp_path):
    work_dir = tmp_path / 'keep'
    check_ok(
        run_tool(
            'train.py', TINY_CFG, '--work-dir', work_dir,
            *options(run['data_root'], run['pretrained'],
                     'default_hooks.checkpoint.interval=1',
                     'default_hooks.checkpoint.max_keep_ckpts=1'),
            cwd=tmp_path))
    # the best checkpoint (validation at iteration 2) gets one too
    assert sorted(p.name for p in work_dir.glob('*')
                  if p.suffix in ('.pth', '.safetensors')) == [
        'best_mIoU_iter_2.pth', 'best_mIoU_iter_2_peft.safetensors',
        'iter_2.pth', 'iter_2_peft.safetensors'
    ]


@pytest.mark.e2e
def test_runner_type_keeps_strict_loading_and_head_init(run, tmp_path):
    runner = ['runner_type=Runner']
    hidden4 = ['model.backbone.peft.hidden_dim=4']
    proc = evaluate(run, run['work_dir'] / 'iter_2.pth', tmp_path, *runner,
                    *hidden4)
    assert proc.returncode != 0
    assert 'shapes differ' in proc.stderr and 'Iter(test)' not in proc.stdout
    trained = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'load_from',
        '--trust-checkpoint', run['work_dir'],
        *options(run['data_root'], run['pretrained'], *runner, *hidden4,
                 f'load_from={run["work_dir"] / "iter_2.pth"}',
                 'head_init=constructor'), cwd=tmp_path)
    assert trained.returncode != 0
    assert 'does not fit' in trained.stderr and 'shapes differ' in \
        trained.stderr
    assert "head_init='constructor': only the backbone's init_weights() " \
        'ran' in trained.stdout + trained.stderr
    assert 'Iter(train)' not in trained.stdout


def test_runner_class_for_runner_type():
    from mmengine.runner import FlexibleRunner, Runner

    from mmparax.apis.runner import PEFTRunner, PEFTRunnerMixin, runner_class

    class OwnRunner(Runner):
        pass

    assert runner_class() is PEFTRunner
    assert runner_class('Runner') is PEFTRunner
    assert runner_class(PEFTRunner) is PEFTRunner
    own = runner_class(OwnRunner)
    assert issubclass(own, OwnRunner) and issubclass(own, PEFTRunnerMixin)
    with pytest.raises(TypeError, match='not a subclass of mmengine'):
        runner_class(FlexibleRunner)


@pytest.mark.e2e
def test_hook_argument_typo_stops_before_the_first_iteration(run, tmp_path):
    proc = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'typo',
        *options(run['data_root'], run['pretrained'],
                 'default_hooks.checkpoint.intervall=1'), cwd=tmp_path)
    assert proc.returncode != 0
    assert 'Iter(train)' not in proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "default_hooks.checkpoint (CheckpointHook) has no argument " \
        "'intervall'" in message
    assert 'interval, ' in message and 'max_keep_ckpts' in message


@pytest.mark.parametrize('hooks,where,key,accepted', [
    (dict(checkpoint=dict(type='CheckpointHook', intervall=1)),
     'default_hooks.checkpoint', 'intervall', 'interval'),
    (dict(checkpoint=dict(type='mmparax.CheckpointHook', max_keep=1)),
     'default_hooks.checkpoint', 'max_keep', 'max_keep_ckpts'),
    (dict(logger=dict(type='LoggerHook', intervall=1)),
     'default_hooks.logger', 'intervall', 'interval'),
    ([dict(type='mmparax.PEFTCheckpointHook', sufix='_a')],
     'custom_hooks[0]', 'sufix', 'suffix'),
])
def test_check_hook_arguments_names_the_unknown_key(hooks, where, key,
                                                    accepted):
    from mmengine.runner import Runner

    from mmparax.apis.runner import check_hook_arguments
    default, custom = (hooks, None) if isinstance(hooks, dict) else \
        (None, hooks)
    with pytest.raises(TypeError) as info:
        check_hook_arguments(default, custom, 'mmseg', Runner.save_checkpoint)
    message = str(info.value)
    assert re.match(rf"{re.escape(where)} \(\w+\) has no argument '{key}'; "
                    'it accepts ', message), message
    assert accepted in message.split('accepts ')[1].split('.')[0].split(', ')
    good = dict(
        checkpoint=dict(type='CheckpointHook', interval=1, priority='LOW'),
        logger=dict(type='LoggerHook', interval=5), timer=None)
    check_hook_arguments(good, [dict(type='mmparax.PEFTCheckpointHook')],
                         'mmseg', Runner.save_checkpoint)


@pytest.mark.e2e
@pytest.mark.parametrize('name',
                         ['best_mIoU_iter_2.pth', 'iter_2_peft.safetensors'])
def test_resume_from_a_weights_only_file_is_refused(run, tmp_path, name):
    proc = run_tool(
        'train.py', TINY_CFG, '--work-dir', tmp_path / 'resume', '--resume',
        run['work_dir'] / name, '--trust-checkpoint', run['work_dir'],
        *options(run['data_root'], run['pretrained'],
                 'train_cfg.max_iters=4'), cwd=tmp_path)
    assert proc.returncode != 0
    assert 'Iter(train)' not in proc.stdout + proc.stderr
    assert f'Cannot resume from {run["work_dir"] / name}: it holds no ' \
        'optimizer and no param_schedulers state' in proc.stderr
    assert f'--resume {run["work_dir"] / "iter_2.pth"}' in proc.stderr
    assert 'load_from=' in proc.stderr


@pytest.mark.e2e
def test_resumed_run_keeps_the_peft_files_it_resumed_from(run, tmp_path):
    work_dir = tmp_path / 'work'
    check_ok(
        run_tool('train.py', TINY_CFG, '--work-dir', work_dir,
                 *options(run['data_root'], run['pretrained']),
                 cwd=tmp_path))
    before = {p.name: p.read_bytes() for p in work_dir.glob('*_peft.*')}
    assert set(before) == {
        'iter_2_peft.safetensors', 'best_mIoU_iter_2_peft.safetensors'
    }
    check_ok(
        run_tool('train.py', TINY_CFG, '--work-dir', work_dir, '--resume',
                 *options(run['data_root'], run['pretrained'],
                          'train_cfg.max_iters=3'), cwd=tmp_path))
    assert (work_dir / 'iter_3_peft.safetensors').exists()
    for name, data in before.items():
        assert (work_dir / name).read_bytes() == data, name


@pytest.mark.e2e
def test_peft_file_alone_rebuilds_its_model(run, tmp_path):
    """tools/test.py FILE: the config the file records, the pretrained
    backbone of its checkpoint_file, the same metrics as with the config."""
    small = run['work_dir'] / 'iter_2_peft.safetensors'
    alone = run_tool('test.py', small, '--work-dir', tmp_path / 'alone' /
                     'test', '--out-metrics', tmp_path / 'm.json',
                     cwd=tmp_path)
    check_ok(alone)
    assert 'Load PEFT checkpoint' in alone.stdout + alone.stderr
    with_config = evaluate(run, small, tmp_path / 'config')
    check_ok(with_config)
    assert metrics_of(tmp_path / 'alone' / 'test') == \
        metrics_of(tmp_path / 'config' / 'test')
    record = json.loads((tmp_path / 'm.json').read_text())
    assert record['config']['path'] == f'recorded in {small}'
    # its pretrained backbone is still checked by fingerprint
    other = write_checkpoint(
        str(tmp_path / 'other_swin.pth'),
        swin_to_microsoft(tiny_swin_state_dict(seed=1)), wrapper='model')
    proc = run_tool('test.py', small, '--work-dir', tmp_path / 'other',
                    '--cfg-options',
                    f'model.backbone.init_cfg.checkpoint={other}',
                    cwd=tmp_path)
    assert proc.returncode != 0 and 'fingerprint' in proc.stderr
    # a full checkpoint alone names what to give
    proc = run_tool('test.py', run['work_dir'] / 'iter_2.pth', cwd=tmp_path)
    assert proc.returncode != 0
    assert 'give a checkpoint after the config' in proc.stderr


@pytest.mark.e2e
def test_old_pickled_peft_file_still_loads(run, tmp_path):
    """A ``*_peft.pth`` of an older run (a pickle of tensors and plain
    values, no recorded settings) evaluates weights-only."""
    written = load_safetensors(str(run['work_dir'] /
                                   'iter_2_peft.safetensors'))
    info = dict(written['meta'][PEFT_META])
    for key in ('peft', 'host'):
        info.pop(key)
    old = tmp_path / 'iter_2_peft.pth'
    torch.save(dict(state_dict=written['state_dict'],
                    meta={PEFT_META: info, 'iter': 2}), old)
    proc = evaluate(run, old, tmp_path / 'old')
    check_ok(proc)
    assert 'Load PEFT checkpoint' in proc.stdout + proc.stderr
    assert metrics_of(tmp_path / 'old' / 'test') == metrics_of_full(
        run, tmp_path)


def metrics_of_full(run, tmp_path):
    check_ok(evaluate(run, run['work_dir'] / 'iter_2.pth', tmp_path / 'full'))
    return metrics_of(tmp_path / 'full' / 'test')


@pytest.mark.e2e
def test_damaged_peft_file_is_named(run, tmp_path):
    data = (run['work_dir'] / 'iter_2_peft.safetensors').read_bytes()
    cut = tmp_path / 'cut_peft.safetensors'
    cut.write_bytes(data[:len(data) // 2])
    proc = evaluate(run, cut, tmp_path / 'cut')
    assert proc.returncode != 0
    assert 'DamagedCheckpointError' in proc.stderr and str(cut) in \
        proc.stderr
    assert f'{len(data) // 2:,} bytes' in proc.stderr


def test_save_peft_checkpoint_writes_safetensors_only(tmp_path):
    import mmparax  # noqa: F401
    cfg = Config.fromfile(TINY_CFG)
    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r'name it \*\.safetensors'):
        save_peft_checkpoint(model, str(tmp_path / 'a_peft.pth'), cfg)
    path = str(tmp_path / 'a_peft.safetensors')
    written = save_peft_checkpoint(model, path, cfg)
    loaded = load_safetensors(path)
    assert loaded['meta'][PEFT_META] == json.loads(
        json.dumps(written['meta'][PEFT_META]))
    for key, value in written['state_dict'].items():
        assert torch.equal(loaded['state_dict'][key], value), key


def test_parax_file_that_records_rank_loads(tmp_path):
    """A ParaX PEFT file written when the bottleneck width was called
    ``rank`` (in its settings and its recorded config) is compared with a
    config, and rebuilds its model, under the name ``hidden_dim``."""
    import mmparax  # noqa: F401
    cfg = Config.fromfile(TINY_CFG)
    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    written = peft_checkpoint(model, cfg=cfg)
    meta = written['meta']
    peft = meta[PEFT_META]['peft']
    peft['rank'] = peft.pop('hidden_dim')
    meta['cfg'] = meta['cfg'].replace('hidden_dim=', 'rank=')
    assert 'hidden_dim' not in meta['cfg']
    path = str(tmp_path / 'old_peft.safetensors')
    write_safetensors(path, written['state_dict'],
                      {k: json.dumps(v) for k, v in meta.items()})

    old = load_safetensors(path)
    assert old['meta'][PEFT_META]['peft']['rank'] == 8
    assert settings_problems(old, cfg) == []
    cfg.model.backbone.peft.hidden_dim = 4
    assert settings_problems(old, cfg) == [
        '  peft.hidden_dim: file 8 vs config 4']
    recorded = recorded_config(path)
    assert 'rank' not in recorded.model.backbone.peft
    assert recorded.model.backbone.peft.hidden_dim == 8
    recorded.model.backbone.init_cfg = None
    rebuilt = MODELS.build(recorded.model)
    assert checkpoint_problems(rebuilt, old['state_dict'], peft=True) == []


@pytest.mark.e2e
def test_to_safetensors_pretrained_and_full(run, tmp_path):
    """The pretrained file converted once evaluates a PEFT file to the same
    metrics; a full checkpoint converted evaluates like the .pth."""
    converter = osp.join('model_converters', 'to_safetensors.py')
    pretrained = tmp_path / 'swin.safetensors'
    check_ok(run_tool(converter, TINY_CFG, run['pretrained'], pretrained,
                      cwd=tmp_path))
    small = run['work_dir'] / 'iter_2_peft.safetensors'
    check_ok(evaluate(run, small, tmp_path / 'st', pretrained=pretrained))
    full = tmp_path / 'iter_2.safetensors'
    check_ok(run_tool(converter, TINY_CFG, run['work_dir'] / 'iter_2.pth',
                      full, '--full', cwd=tmp_path))
    check_ok(evaluate(run, full, tmp_path / 'full_st'))
    reference = metrics_of_full(run, tmp_path)
    assert metrics_of(tmp_path / 'st' / 'test') == reference
    assert metrics_of(tmp_path / 'full_st' / 'test') == reference
    # a file that is not a full checkpoint of the model: refused, nothing
    # written
    other = tmp_path / 'other.safetensors'
    proc = run_tool(converter, TINY_CFG, run['pretrained'], other, '--full',
                    cwd=tmp_path)
    assert proc.returncode != 0 and 'does not fit' in proc.stderr
    assert not other.exists()
