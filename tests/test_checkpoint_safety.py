"""Checkpoint loading never runs code from an untrusted file: remote schemes,
the files a run writes (weights-only with the Runner's allow-list), trust of
only what the user names, damaged files, and what the restricted loader
reports it refused."""
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner
from mmengine.runner import checkpoint as mm_checkpoint

import mmparax
from mmparax.apis import runtime, trusted_loading
from mmparax.apis.trusted_loading import (
    TRUST_ENV,
    DamagedCheckpointError,
    UntrustedCheckpointError,
    load_from_safe,
    register_trusted_loader,
    trust_checkpoints,
)
from mmparax.testing import (
    check_ok,
    check_weights_only,
    run_tool,
    short_demo_config,
    tiny_swin_kwargs,
    tiny_swin_state_dict,
)
from mmparax.utils import restricted_load
from mmparax.utils.restricted_load import load_weights_file, refusal_reason

URL = 'https://models.example.org/releases/v1/swin_tiny_crafted.pth'


class _RunsCode:
    """Unpickling this creates the folder ``path``: arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path, ))


@pytest.fixture
def safe_env(tmp_path, monkeypatch):
    """Fresh trust state, a private key file, a hub cache in tmp_path, our
    loaders registered, and any download attempt an error."""
    monkeypatch.setattr(trusted_loading, '_trusted', [])
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        dict(CheckpointLoader._schemes))
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    downloads = []

    def no_download(url, dst, *args, **kwargs):
        downloads.append((url, dst))
        raise AssertionError(f'tried to download {url}')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    register_trusted_loader()
    (hub / 'checkpoints').mkdir(parents=True)
    return dict(hub=hub / 'checkpoints', downloads=downloads)


def crafted(path, marker, weights=None):
    """A checkpoint that creates ``marker`` when fully unpickled."""
    torch.save({
        'state_dict': dict(weights if weights is not None else
                           {'w': torch.ones(2)}),
        'x': _RunsCode(str(marker))
    }, path)
    return path


def capture_logs(monkeypatch, module):
    logs = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, *a, **k: logs.append(str(msg)))
    return logs


# -- 1. remote checkpoints ---------------------------------------------------


def test_every_mmengine_scheme_gets_a_safe_loader(safe_env):
    originals = set(
        name for name, fn in vars(mm_checkpoint).items()
        if name.startswith('load_from_'))
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__name__ not in originals or \
            loader.__module__ != mm_checkpoint.__name__, prefix
        assert loader is load_from_safe, prefix
    for path in ('https://a/b.pth', 'http://a/b.pth', 'torchvision://r50',
                 'modelzoo://r50', 'open-mmlab://x', 'openmmlab://x',
                 'mmcls://x', 's3://bucket/x.pth', 'cluster:s3://b/x.pth',
                 'petrel://b/x.pth', 'pavi://x'):
        assert CheckpointLoader._get_checkpoint_loader(path) is \
            load_from_safe, path


@pytest.mark.parametrize('scheme', ['https', 'torchvision', 'open-mmlab'])
def test_crafted_remote_checkpoint_is_refused(safe_env, tmp_path,
                                              monkeypatch, scheme):
    marker = tmp_path / 'code_ran'
    cached = crafted(safe_env['hub'] / osp.basename(URL), marker)
    name = {'https': URL, 'torchvision': 'torchvision://crafted',
            'open-mmlab': 'open-mmlab://crafted'}[scheme]
    monkeypatch.setattr(mm_checkpoint, 'get_torchvision_models',
                        lambda: {'crafted': URL})
    monkeypatch.setattr(mm_checkpoint, 'get_external_models',
                        lambda: {'crafted': URL})
    with pytest.raises(UntrustedCheckpointError) as info:
        CheckpointLoader.load_checkpoint(name, map_location='cpu')
    message = str(info.value)
    assert not marker.exists()
    assert name in message and str(cached) in message
    assert f'--trust-checkpoint {name}' in message and TRUST_ENV in message
    assert 'posix.mkdir' in message  # what torch refused
    assert safe_env['downloads'] == []  # served from the cache


def test_trusted_url_loads_fully(safe_env, tmp_path):
    marker = tmp_path / 'code_ran'
    crafted(safe_env['hub'] / osp.basename(URL), marker)
    trust_checkpoints(URL)
    ckpt = CheckpointLoader.load_checkpoint(URL, map_location='cpu')
    assert marker.exists()  # named by the user: full unpickling
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_missing_remote_file_is_downloaded_into_the_hub_cache(
        safe_env, monkeypatch):
    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append((url, dst))
        torch.save({'state_dict': {'w': torch.zeros(3)}}, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    ckpt = CheckpointLoader.load_checkpoint(URL, map_location='cpu')
    assert calls == [(URL, str(safe_env['hub'] / osp.basename(URL)))]
    assert torch.equal(ckpt['state_dict']['w'], torch.zeros(3))
    CheckpointLoader.load_checkpoint(URL, map_location='cpu')
    assert len(calls) == 1  # cached


def test_load_weights_file_reads_urls_without_running_code(
        safe_env, tmp_path, monkeypatch):
    marker = tmp_path / 'code_ran'
    crafted(safe_env['hub'] / osp.basename(URL), marker)
    logs = capture_logs(monkeypatch, restricted_load)
    # even if something registered an unsafe loader for the scheme
    CheckpointLoader.register_scheme(
        'https://', mm_checkpoint.load_from_http, force=True)
    ckpt = load_weights_file(URL)
    assert not marker.exists()
    assert isinstance(ckpt['x'], restricted_load.OpaqueObject)
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert any(URL in line and 'posix.mkdir' in line for line in logs)


def test_backbone_init_cfg_url_runs_no_code(safe_env, tmp_path,
                                            monkeypatch):
    marker = tmp_path / 'code_ran'
    state = tiny_swin_state_dict(seed=1)
    crafted(safe_env['hub'] / osp.basename(URL), marker, weights=state)
    model = mmparax.models.Swin(
        init_cfg=dict(type='Pretrained', checkpoint=URL),
        **tiny_swin_kwargs())
    model.init_weights()
    assert not marker.exists()
    key = 'stages.0.blocks.0.attn.w_msa.qkv.weight'
    assert torch.equal(model.state_dict()[key], state[key])

    # a crafted file without the weights: the error names the URL
    crafted(safe_env['hub'] / osp.basename(URL), marker)
    model = mmparax.models.Swin(
        init_cfg=dict(type='Pretrained', checkpoint=URL),
        **tiny_swin_kwargs())
    with pytest.raises(RuntimeError) as info:
        model.init_weights()
    assert URL in str(info.value)
    assert not marker.exists()


def test_unknown_scheme_is_refused(safe_env):
    CheckpointLoader._schemes['ftp://'] = mm_checkpoint.load_from_local
    register_trusted_loader()
    with pytest.raises(ValueError, match='No safe loader for ftp://'):
        CheckpointLoader.load_checkpoint('ftp://host/x.pth')
    with pytest.raises(ValueError, match='No safe loader'):
        load_weights_file('ftp://host/x.pth')


# -- 2. trust only what the user names ---------------------------------------


def test_crafted_pickle_in_the_work_dir_is_refused(safe_env, tmp_path):
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    marker = tmp_path / 'code_ran'
    bad = crafted(work_dir / 'iter_1.pth', marker)
    runtime.setup_checkpoint_trust(Config(dict(work_dir=str(work_dir))))
    with pytest.raises(UntrustedCheckpointError) as info:
        load_from_safe(str(bad), 'cpu')
    message = str(info.value)
    assert not marker.exists()
    assert 'posix.mkdir' in message  # the global torch refused
    assert f'--trust-checkpoint {osp.realpath(bad)}' in message


def test_link_in_a_trusted_folder_to_a_file_elsewhere(safe_env, tmp_path):
    marker = tmp_path / 'code_ran'
    (tmp_path / 'trusted').mkdir()
    other = crafted(tmp_path / 'evil.pth', marker)
    (tmp_path / 'trusted' / 'iter_2.pth').symlink_to(other)
    trust_checkpoints(str(tmp_path / 'trusted'))
    with pytest.raises(UntrustedCheckpointError):
        load_from_safe(str(tmp_path / 'trusted' / 'iter_2.pth'), 'cpu')
    assert not marker.exists()
    trust_checkpoints(str(other))  # named itself: foreign pickles load
    load_from_safe(str(tmp_path / 'trusted' / 'iter_2.pth'), 'cpu')
    assert marker.exists()


def test_trusted_folder_does_not_trust_a_name_it_prefixes(safe_env,
                                                          tmp_path):
    marker = tmp_path / 'code_ran'
    for folder in ('b', 'bc'):
        (tmp_path / folder).mkdir()
        crafted(tmp_path / folder / 'x.pth', marker)
    trust_checkpoints(str(tmp_path / 'b') + os.sep)
    assert trusted_loading.trust_reason(str(tmp_path / 'b' / 'x.pth'))
    assert trusted_loading.trust_reason(str(tmp_path / 'bc' / 'x.pth')) \
        is None
    with pytest.raises(UntrustedCheckpointError):
        load_from_safe(str(tmp_path / 'bc' / 'x.pth'), 'cpu')
    assert not marker.exists()


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


def _toy_runner(work_dir, max_iters, resume=False, load_from=None):
    cfg = Config(
        dict(
            work_dir=str(work_dir),
            resume=resume,
            load_from=load_from,
            custom_hooks=[],
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=1, by_epoch=False),
                logger=dict(type='LoggerHook', interval=1))))
    runtime.setup_checkpoint_trust(cfg)
    return Runner(
        model=_ToyModel(),
        work_dir=cfg.work_dir,
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(2))] * 4,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=cfg.default_hooks,
        custom_hooks=cfg.custom_hooks,
        resume=cfg.resume,
        load_from=cfg.load_from,
        experiment_name=f'toy_{max_iters}_{resume}_{load_from is None}')


@pytest.mark.slow
def test_runner_resumes_without_trust_or_key(safe_env, tmp_path):
    work_dir = tmp_path / 'work_dir'
    _toy_runner(work_dir, 2).train()
    assert not list(work_dir.glob('.*'))  # no manifest or record
    # mmengine's checkpoints (message_hub: HistoryBuffer, numpy) load
    # weights-only with the Runner's allow-list: a copy needs no trust
    copy = tmp_path / 'copy.pth'
    copy.write_bytes((work_dir / 'iter_2.pth').read_bytes())
    assert load_from_safe(str(copy), 'cpu')['meta']['iter'] == 2
    runner = _toy_runner(work_dir, 3, resume=True)  # last_checkpoint
    runner.train()
    assert runner.iter == 3


def test_crafted_load_from_runs_no_code(safe_env, tmp_path):
    marker = tmp_path / 'code_ran'
    work_dir = tmp_path / 'work_dir'
    bad = crafted(tmp_path / 'iter_2.pth', marker)
    with pytest.raises(UntrustedCheckpointError, match='posix.mkdir'):
        _toy_runner(work_dir, 1, load_from=str(bad)).train()
    assert not marker.exists()


# -- 3. damaged files --------------------------------------------------------


def _damaged(path, kind):
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'random':
        path.write_bytes(bytes(range(7, 250)) * 8)
    else:
        legacy = kind == 'truncated_legacy'
        torch.save(
            {'state_dict': tiny_swin_state_dict(seed=0)},
            path,
            _use_new_zipfile_serialization=not legacy)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path


@pytest.mark.parametrize(
    'kind', ['empty', 'truncated_zip', 'truncated_legacy', 'random'])
@pytest.mark.parametrize('entry',
                         ['weights_file', 'backbone', 'local', 'trusted'])
def test_damaged_files_are_named_as_damaged(safe_env, tmp_path, kind, entry):
    path = _damaged(tmp_path / 'swin.pth', kind)
    size = osp.getsize(path)
    with pytest.raises(DamagedCheckpointError) as info:
        if entry == 'weights_file':
            load_weights_file(str(path))
        elif entry == 'backbone':
            mmparax.models.Swin(
                init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                **tiny_swin_kwargs()).init_weights()
        else:
            if entry == 'trusted':
                trust_checkpoints(str(path))
            CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    message = str(info.value)
    assert str(path) in message
    assert f'({size:,} bytes)' in message
    assert 'damaged or is not a PyTorch checkpoint' in message
    assert 'download the file again' in message


@pytest.mark.parametrize('legacy', [False, True])
def test_truncated_untrusted_checkpoint_is_damaged(safe_env, tmp_path,
                                                   legacy):
    # a runner checkpoint (objects beyond tensors), cut off, not trusted
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'iter_8.pth'
    torch.save({'state_dict': tiny_swin_state_dict(seed=0),
                'x': _RunsCode(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DamagedCheckpointError, match='damaged'):
        load_from_safe(str(path), 'cpu')
    assert not marker.exists()


def test_damaged_download_names_the_url(safe_env, tmp_path):
    _damaged(safe_env['hub'] / osp.basename(URL), 'truncated_zip')
    for load in (lambda: CheckpointLoader.load_checkpoint(URL),
                 lambda: load_weights_file(URL)):
        with pytest.raises(DamagedCheckpointError, match='damaged') as info:
            load()
        assert URL in str(info.value)


# -- 4. what the restricted loader refused -----------------------------------


def test_refusal_names_the_global(safe_env, tmp_path, monkeypatch):
    import types
    module = types.ModuleType('fake_training_lib')

    class Settings(dict):
        pass

    Settings.__module__, Settings.__qualname__ = 'fake_training_lib', \
        'Settings'
    module.Settings = Settings
    monkeypatch.setitem(__import__('sys').modules, 'fake_training_lib',
                        module)
    marker = tmp_path / 'code_ran'
    for obj, name in ((Settings(a=1), 'fake_training_lib.Settings'),
                      (_RunsCode(str(marker)), 'posix.mkdir')):
        path = tmp_path / 'ckpt.pth'
        torch.save({'model': {'w': torch.ones(1)}, 'obj': obj}, path)
        with pytest.raises(Exception) as info:
            torch.load(path, weights_only=True)
        reason = refusal_reason(info.value)
        assert name in reason and len(reason) < 200
        assert 'Do it only if' not in reason
        with pytest.raises(UntrustedCheckpointError) as info:
            load_from_safe(str(path), 'cpu')
        assert f'weights_only=True) ({reason})' in str(info.value)
        logs = capture_logs(monkeypatch, restricted_load)
        load_weights_file(str(path))
        (line, ) = logs
        # the reason part, before the list of placeholders, names it
        assert name in line.split('Replaced by')[0], line
    assert not marker.exists()


# -- 5. what mmengine's Runner writes loads weights-only ---------------------


def assert_weights_only(work_dir, tmp_path):
    """Every ``.pth`` of ``work_dir`` loads weights-only with the Runner's
    allow-list, and through ``load_from_safe`` from a folder no run wrote
    (no trust)."""
    for name in check_weights_only(work_dir):
        copy = tmp_path / 'elsewhere' / name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes((work_dir / name).read_bytes())
        assert 'state_dict' in load_from_safe(str(copy), 'cpu')


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['peft_amp_rng', 'full_no_rng'])
def test_runner_checkpoints_load_weights_only(safe_env, tmp_path, kind):
    config = short_demo_config(str(tmp_path), total=2, interval=2,
                               num_train=4, num_val=2)
    args = ['--amp'] if kind == 'peft_amp_rng' else [
        '--cfg-options', 'model.backbone.peft=None', 'custom_hooks=[]',
        'default_hooks.rng_state.enabled=False']
    work_dir = tmp_path / 'work'
    env = dict(OMP_NUM_THREADS='1', XDG_CONFIG_HOME=str(tmp_path / 'cfg'))
    check_ok(run_tool('train.py', config, '--work-dir', work_dir, *args,
                      cwd=tmp_path, env=env))
    assert_weights_only(work_dir, tmp_path)
    checkpoint = load_from_safe(str(work_dir / 'iter_2.pth'), 'cpu')
    assert ('loss_scaler' in checkpoint['optimizer']) == (
        kind == 'peft_amp_rng')
    assert ('rng_states' in checkpoint) == (kind == 'peft_amp_rng')
    has_peft = (work_dir / 'iter_2_peft.safetensors').exists()
    assert has_peft == (kind == 'peft_amp_rng')


class _Reaches:
    """Unpickles to ``getattr(owner, name)``."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize('owner,name', [
    ('HistoryBuffer', '__init__'), ('HistoryBuffer', '__class__'),
    ('ndarray', 'min'),
])
def test_allow_list_reaches_only_history_buffer_statistics(
        safe_env, tmp_path, owner, name):
    import numpy as np
    from mmengine.logging import HistoryBuffer
    owner = dict(HistoryBuffer=HistoryBuffer, ndarray=np.ndarray)[owner]
    path = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': {'w': torch.ones(1)},
                'x': _Reaches(owner, name)}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_from_safe(str(path), 'cpu')
    assert 'getattr' in str(info.value)
    torch.save({'state_dict': {'w': torch.ones(1)},
                'x': _Reaches(HistoryBuffer, 'mean')}, path)
    assert load_from_safe(str(path), 'cpu')['x'] is HistoryBuffer.mean
