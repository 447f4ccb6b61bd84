"""Checkpoint loading never runs code from an untrusted file: remote schemes,
trust of what a run wrote (not of its whole work dir), damaged files, and
what the restricted loader reports it refused."""
import json
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
from mmparax.apis.trusted_loading import (MANIFEST_NAME, TRUST_ENV,
                                          DamagedCheckpointError,
                                          UntrustedCheckpointError,
                                          install_manifest_hook,
                                          load_from_local, load_from_remote,
                                          record_written_checkpoint,
                                          register_trusted_loader,
                                          trust_checkpoints)
from mmparax.testing import tiny_swin_kwargs, tiny_swin_state_dict
from mmparax.utils import restricted_load
from mmparax.utils.restricted_load import (load_weights_file,
                                           refusal_reason, refused_global)

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
    monkeypatch.setenv(trusted_loading.KEY_ENV, str(tmp_path / 'key'))
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
        expected = load_from_local if prefix == '' else load_from_remote
        assert loader is expected, prefix
    for path in ('https://a/b.pth', 'http://a/b.pth', 'torchvision://r50',
                 'modelzoo://r50', 'open-mmlab://x', 'openmmlab://x',
                 'mmcls://x', 's3://bucket/x.pth', 'cluster:s3://b/x.pth',
                 'petrel://b/x.pth', 'pavi://x'):
        assert CheckpointLoader._get_checkpoint_loader(path) is \
            load_from_remote, path


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


# -- 2. trust what the run wrote, not its whole work dir ---------------------


def test_work_dir_is_not_trusted_wholesale(safe_env, tmp_path):
    downloads = tmp_path / 'Downloads'
    downloads.mkdir()
    marker = tmp_path / 'code_ran'
    bad = crafted(downloads / 'file.pth', marker)
    cfg = Config(dict(work_dir=str(downloads)))
    runtime.setup_checkpoint_trust(cfg)
    assert cfg.custom_hooks == [dict(type='mmparax.CheckpointManifestHook')]
    runtime.setup_checkpoint_trust(cfg)
    assert len(cfg.custom_hooks) == 1
    with pytest.raises(UntrustedCheckpointError) as info:
        load_from_local(str(bad), 'cpu')
    message = str(info.value)
    assert not marker.exists()
    assert f'--trust-checkpoint {osp.realpath(bad)}' in message
    assert MANIFEST_NAME in message and 'written before' in message


def test_recorded_checkpoint_is_trusted_until_changed(safe_env, tmp_path):
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    marker = tmp_path / 'code_ran'
    ckpt = crafted(work_dir / 'iter_1.pth', marker)
    manifest = record_written_checkpoint(str(ckpt))
    assert manifest == osp.join(osp.realpath(work_dir), MANIFEST_NAME)
    assert trusted_loading.trust_reason(str(ckpt)) == manifest
    load_from_local(str(ckpt), 'cpu')
    assert marker.exists()  # recorded: full unpickling
    os.rmdir(marker)

    # same name, other content: refused
    crafted(ckpt, marker, weights={'w': torch.zeros(2)})
    with pytest.raises(UntrustedCheckpointError):
        load_from_local(str(ckpt), 'cpu')
    # a copy under another name, a link to a recorded file elsewhere
    record_written_checkpoint(str(ckpt))
    other = crafted(tmp_path / 'evil.pth', marker)
    (work_dir / 'iter_2.pth').symlink_to(other)
    for path in (work_dir / 'iter_2.pth', tmp_path / 'evil.pth'):
        with pytest.raises(UntrustedCheckpointError):
            load_from_local(str(path), 'cpu')
    assert not marker.exists()


def test_manifest_sealed_by_another_key_is_not_trusted(
        safe_env, tmp_path, monkeypatch):
    # a work dir (manifest included) made on another machine or by someone
    # else, then unpacked here, where our own key exists
    marker = tmp_path / 'code_ran'
    (tmp_path / 'ours').mkdir()
    monkeypatch.setenv(trusted_loading.KEY_ENV, str(tmp_path / 'our_key'))
    record_written_checkpoint(str(crafted(tmp_path / 'ours' / 'a.pth',
                                          marker)))
    ckpt = crafted(tmp_path / 'iter_4.pth', marker)
    monkeypatch.setenv(trusted_loading.KEY_ENV, str(tmp_path / 'their_key'))
    record_written_checkpoint(str(ckpt))
    assert trusted_loading.trust_reason(str(ckpt))
    monkeypatch.setenv(trusted_loading.KEY_ENV, str(tmp_path / 'our_key'))
    assert trusted_loading._key(create=False) is not None
    assert trusted_loading.trust_reason(str(ckpt)) is None
    with pytest.raises(UntrustedCheckpointError):
        load_from_local(str(ckpt), 'cpu')
    assert not marker.exists()


def _edit_manifest(folder, edit):
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data['checkpoints'])
    path.write_text(json.dumps(data))


def test_manifest_edited_by_hand_is_not_trusted(safe_env, tmp_path):
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    marker = tmp_path / 'code_ran'
    ckpt = crafted(work_dir / 'iter_1.pth', marker)
    record_written_checkpoint(str(ckpt))
    assert trusted_loading.trust_reason(str(ckpt))
    # other bytes under the recorded name, the entry's size and hash edited
    # to match them (its seal kept)
    crafted(ckpt, marker, weights={'w': torch.zeros(3)})
    size, sha256 = osp.getsize(ckpt), trusted_loading._sha256(str(ckpt))
    _edit_manifest(work_dir, lambda e: e['iter_1.pth'].update(
        size=size, sha256=sha256))
    # a new entry with the seal of another
    other = crafted(work_dir / 'iter_2.pth', marker)
    _edit_manifest(work_dir, lambda e: e.update({'iter_2.pth': dict(
        e['iter_1.pth'], size=osp.getsize(other),
        sha256=trusted_loading._sha256(str(other)))}))
    for path in (ckpt, other):
        assert trusted_loading.trust_reason(str(path)) is None
        with pytest.raises(UntrustedCheckpointError):
            load_from_local(str(path), 'cpu')
    assert not marker.exists()


@pytest.mark.parametrize('key', [b'', b'\n', b'0123456789abcdef'])
def test_empty_or_short_key_file_is_refused(safe_env, tmp_path, monkeypatch,
                                            key):
    key_file = tmp_path / 'key'  # the key file of safe_env
    key_file.write_bytes(key)
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    marker = tmp_path / 'code_ran'
    ckpt = crafted(work_dir / 'iter_1.pth', marker)
    # a manifest sealed with that key: anyone who can guess it can make one
    size, sha256 = osp.getsize(ckpt), trusted_loading._sha256(str(ckpt))
    (work_dir / MANIFEST_NAME).write_text(json.dumps(dict(
        version=1, checkpoints={'iter_1.pth': dict(
            size=size, sha256=sha256, mac=trusted_loading._seal(
                key.strip(), 'iter_1.pth', size, sha256))})))
    assert trusted_loading.trust_reason(str(ckpt)) is None
    with pytest.raises(UntrustedCheckpointError):
        load_from_local(str(ckpt), 'cpu')
    assert not marker.exists()
    # nor is it used to record, or replaced behind the user's back
    logs = capture_logs(monkeypatch, trusted_loading)
    assert record_written_checkpoint(str(ckpt)) is None
    assert str(key_file) in logs[-1] and '32' in logs[-1]
    assert key_file.read_bytes() == key


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
        load_from_local(str(tmp_path / 'bc' / 'x.pth'), 'cpu')
    assert not marker.exists()


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


def _toy_runner(work_dir, max_iters, resume=False):
    cfg = Config(
        dict(
            work_dir=str(work_dir),
            resume=resume,
            load_from=None,
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
        experiment_name=f'toy_{max_iters}_{resume}')


def test_runner_records_its_checkpoints_and_resumes(safe_env, tmp_path):
    work_dir = tmp_path / 'work_dir'
    _toy_runner(work_dir, 2).train()
    for name in ('iter_1.pth', 'iter_2.pth'):
        assert trusted_loading.is_recorded_checkpoint(str(work_dir / name))
    # mmengine's checkpoints (message_hub: HistoryBuffer, numpy) load
    # weights-only with the Runner's allow-list: a copy needs no trust
    copy = tmp_path / 'copy.pth'
    copy.write_bytes((work_dir / 'iter_2.pth').read_bytes())
    assert load_from_local(str(copy), 'cpu')['meta']['iter'] == 2
    ckpt = load_from_local(str(work_dir / 'iter_2.pth'), 'cpu')
    assert ckpt['meta']['iter'] == 2
    runner = _toy_runner(work_dir, 3, resume=True)  # last_checkpoint
    runner.train()
    assert runner.iter == 3
    assert trusted_loading.is_recorded_checkpoint(str(work_dir / 'iter_3.pth'))


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
        load_from_local(str(path), 'cpu')
    assert not marker.exists()


def test_damaged_download_names_the_url(safe_env, tmp_path):
    _damaged(safe_env['hub'] / osp.basename(URL), 'truncated_zip')
    for load in (lambda: CheckpointLoader.load_checkpoint(URL),
                 lambda: load_weights_file(URL)):
        with pytest.raises(DamagedCheckpointError, match='damaged') as info:
            load()
        assert URL in str(info.value)


# -- 4. what the restricted loader refused -----------------------------------


def test_refusal_names_the_global(tmp_path, monkeypatch):
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
        assert refused_global(info.value) == name
        reason = refusal_reason(info.value)
        assert name in reason and len(reason) < 200
        assert 'Do it only if' not in reason
        logs = capture_logs(monkeypatch, restricted_load)
        load_weights_file(str(path))
        (line, ) = logs
        # the reason part, before the list of placeholders, names it
        assert name in line.split('Replaced by')[0], line
    assert not marker.exists()


def test_install_manifest_hook_keeps_other_hooks():
    cfg = Config(dict(custom_hooks=[dict(type='mmparax.PEFTCheckHook')]))
    install_manifest_hook(cfg)
    install_manifest_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'mmparax.PEFTCheckHook', 'mmparax.CheckpointManifestHook'
    ]


# -- 5. what mmengine's Runner writes loads weights-only ---------------------


def _allowed_names():
    from torch._weights_only_unpickler import _get_allowed_globals
    from mmparax.utils.runner_globals import RUNNER_GLOBALS
    with torch.serialization.safe_globals(RUNNER_GLOBALS):
        from torch._weights_only_unpickler import _get_user_allowed_globals
        return set(_get_allowed_globals()) | set(_get_user_allowed_globals())


def assert_weights_only(work_dir, tmp_path):
    """Every ``.pth`` of ``work_dir`` holds only allowed globals and loads
    with ``load_from_local`` from a folder no run wrote (no trust)."""
    names = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    assert names
    allowed = _allowed_names()
    for name in names:
        used = set(torch.serialization.get_unsafe_globals_in_checkpoint(
            str(work_dir / name)))
        assert used - {'builtins.getattr'} <= allowed, (name, used)
        copy = tmp_path / 'elsewhere' / name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes((work_dir / name).read_bytes())
        checkpoint = load_from_local(str(copy), 'cpu')
        assert 'state_dict' in checkpoint
    return names


@pytest.mark.parametrize('kind', ['peft_amp_rng', 'full_no_rng'])
def test_runner_checkpoints_load_weights_only(safe_env, tmp_path, kind):
    from mmparax.testing import check_ok, run_tool, short_demo_config
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
    checkpoint = load_from_local(str(work_dir / 'iter_2.pth'), 'cpu')
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
        load_from_local(str(path), 'cpu')
    assert 'getattr' in str(info.value)
    torch.save({'state_dict': {'w': torch.ones(1)},
                'x': _Reaches(HistoryBuffer, 'mean')}, path)
    assert load_from_local(str(path), 'cpu')['x'] is HistoryBuffer.mean
