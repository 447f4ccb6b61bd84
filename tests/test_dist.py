"""Distributed runs on the CPU: the launcher scripts, gloo, SyncBN -> BN and
DDP of a model whose backbone is frozen at construction (no
``find_unused_parameters``)."""
import os
import os.path as osp
import re
import shlex
import socket
import stat
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmparax.apis import runtime
from mmparax.apis.trusted_loading import TRUST_ENV
from mmparax.testing import (
    make_ade20k,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
DATA = osp.join(REPO, 'tests', 'configs')
TINY_CFG = osp.join(DATA, 'tiny_parax_swin_upernet_ade20k.py')
PROBE_CFG = osp.join(DATA, 'tiny_parax_swin_upernet_ade20k_rank_params.py')
PYTHON = sys.executable


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def script_env(**extra):
    env = dict(os.environ)
    env.pop(TRUST_ENV, None)
    env.update(extra)
    return env


# -- 2 processes on the CPU --------------------------------------------------


def data_options(data_root, pretrained):
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'model.backbone.init_cfg.checkpoint={pretrained}'
    ]


def run_script(name, *args, cwd):
    """Run ``tools/<name>`` from ``cwd`` (this python, a free port)."""
    return subprocess.run([osp.join(TOOLS, name), *map(str, args)],
                          cwd=str(cwd),
                          env=script_env(
                              PYTHON=PYTHON,
                              PORT=str(free_port()),
                              PYTHONPATH=DATA,
                              OMP_NUM_THREADS='1'),
                          capture_output=True,
                          text=True,
                          timeout=300)


# 8 iterations, validated and saved at 4 and 8; 5 validation images (the
# sampler pads rank 1's shard) of 4 classes, so that a few iterations
# already move the scores
SCHEDULE = [
    'train_cfg.max_iters=8', 'train_cfg.val_interval=4',
    'default_hooks.checkpoint.interval=4', 'optim_wrapper.optimizer.lr=3e-3'
]
VAL_METRICS = re.compile(r'Iter\((?:val|test)\) \[\d+/\d+\]\s+'
                         r'(aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc: [\d.]+)')


@pytest.fixture(scope='module')
def dist_trained(tmp_path_factory):
    """8 iterations of tools/dist_train.sh CONFIG 2 on the CPU."""
    tmp_path = tmp_path_factory.mktemp('dist')
    data_root = make_ade20k(
        str(tmp_path / 'ade'),
        num_train=8,
        num_val=5,
        img_size=(64, 64),
        num_classes=4)
    pretrained_sd = tiny_swin_state_dict(seed=0)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin_tiny_microsoft.pth'),
        swin_to_microsoft(pretrained_sd))
    work_dir = tmp_path / 'work_dir'
    cwd = tmp_path / 'elsewhere'  # the script must not depend on the cwd
    cwd.mkdir()
    proc = run_script('dist_train.sh', PROBE_CFG, 2, '--work-dir', work_dir,
                      *data_options(data_root, pretrained), *SCHEDULE,
                      cwd=cwd)
    return dict(
        proc=proc,
        work_dir=work_dir,
        cwd=cwd,
        data_root=data_root,
        pretrained=pretrained,
        pretrained_sd=pretrained_sd)


@pytest.mark.e2e
@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='checks the CPU-only gloo/BN path; a CUDA device is present')
def test_dist_train_two_processes_on_cpu(dist_trained):
    proc = dist_trained['proc']
    work_dir = dist_trained['work_dir']
    pretrained_sd = dist_trained['pretrained_sd']
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert 'gloo backend instead of nccl' in log
    assert 'Iter(train) [8/8]' in log
    assert re.search(r'SyncBN .* BN .*model\.decode_head\.norm_cfg', log)
    assert (work_dir / 'iter_8.pth').exists()

    dumped = Config.fromfile(
        str(work_dir / 'tiny_parax_swin_upernet_ade20k_rank_params.py'),
        import_custom_modules=False)
    assert dumped.env_cfg.dist_cfg.backend == 'gloo'
    assert dumped.model_wrapper_cfg.device_ids is None
    assert dumped.model_wrapper_cfg.find_unused_parameters is False
    assert not dumped.get('find_unused_parameters', False)
    assert dumped.model.decode_head.norm_cfg.type == 'BN'

    ranks = [
        torch.load(work_dir / f'rank{r}_params.pth', weights_only=True)
        for r in (0, 1)
    ]
    assert set(ranks[0]) == set(ranks[1])
    # parameters and buffers: the BN statistics too
    assert any(k.endswith('.bn.running_mean') for k in ranks[0])
    trainable = [
        k for k in ranks[0] if '.adapter' in k or '.expert_centers.' in k
    ]
    assert trainable
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    # trained, while the frozen backbone kept the pretrained weights
    scales = [k for k in trainable if k.endswith('.layer_scale')]
    assert scales and all(
        not torch.allclose(ranks[0][k], torch.ones_like(ranks[0][k]))
        for k in scales)
    for key, value in pretrained_sd.items():
        name = 'backbone.' + key
        if name in ranks[0] and not re.match(r'norm\d\.', key):
            assert torch.equal(ranks[0][name], value), key


# -- the CPU adaptation, without processes -----------------------------------


def _dist_cfg(**extra):
    cfg = Config.fromfile(TINY_CFG)
    cfg.launcher = 'pytorch'
    cfg.merge_from_dict(extra)
    return cfg


def test_cpu_adaptation(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(runtime, 'is_distributed', lambda: True)
    cfg = _dist_cfg()
    runtime.prepare_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=False,
        device_ids=None)

    # a wrapper of the config keeps its settings
    cfg = _dist_cfg(
        model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', broadcast_buffers=True),
        sync_bn='torch')
    runtime.prepare_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=True,
        device_ids=None)
    assert cfg.sync_bn is None

    # a config without env_cfg records the backend too
    cfg = Config(
        dict(launcher='pytorch', model=dict(norm_cfg=dict(type='SyncBN'))))
    runtime.prepare_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.norm_cfg.type == 'BN'


def test_average_buffers_hook_in_distributed_training_only():
    cfg = _dist_cfg()
    runtime.add_average_buffers_hook(cfg)
    runtime.add_average_buffers_hook(cfg)  # once
    assert [h['type'] for h in cfg.custom_hooks] == [
        'mmparax.PEFTCheckHook', 'mmparax.PEFTCheckpointHook',
        'mmparax.AverageBuffersHook'
    ]
    cfg = _dist_cfg()
    cfg.launcher = 'none'
    runtime.add_average_buffers_hook(cfg)
    assert len(cfg.custom_hooks) == 2


def test_cpu_init_dist_uses_gloo(monkeypatch):
    calls = []
    original = torch.cuda.set_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(runtime, 'is_distributed', lambda: False)
    monkeypatch.setattr(
        runtime, 'init_dist',
        lambda launcher, **kw: calls.append((launcher, kw, torch.cuda.
                                             set_device(0))))
    cfg = _dist_cfg()
    cfg.env_cfg.dist_cfg = dict(backend='nccl', timeout=600)
    runtime.prepare_cpu_distributed(cfg)
    # set_device is a no-op inside, and restored afterwards
    assert calls == [('pytorch', dict(backend='gloo', timeout=600), None)]
    assert torch.cuda.set_device is original


@pytest.mark.parametrize('launcher, cuda', [('none', False),
                                            ('pytorch', True)])
def test_gpu_and_single_process_untouched(monkeypatch, launcher, cuda):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(runtime, 'init_dist', None)  # must not be called
    cfg = _dist_cfg()
    cfg.launcher = launcher
    before = cfg.to_dict()
    runtime.prepare_cpu_distributed(cfg)
    assert cfg.to_dict() == before
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'


# -- launcher scripts: the commands they run ---------------------------------


def _recorder(path):
    """An executable that prints its argv, one shell word each."""
    path.write_text('#!/usr/bin/env bash\n'
                    'echo "PYTHONPATH=$PYTHONPATH"\n'
                    'printf "%q\\n" "$(basename "$0")" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _run_script(name, args, tmp_path, **env):
    cwd = tmp_path / 'cwd'
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run([osp.join(TOOLS, name), *args],
                          cwd=str(cwd),
                          env=script_env(**env),
                          capture_output=True,
                          text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return lines[0], [shlex.split(x)[0] for x in lines[1:]]


@pytest.mark.e2e
def test_dist_scripts_commands(tmp_path):
    python = _recorder(tmp_path / 'fake_python')
    pythonpath, argv = _run_script(
        'dist_train.sh', ['a b.py', '4', '--cfg-options', 'x=1 2'],
        tmp_path,
        PYTHON=python,
        NNODES='2',
        NODE_RANK='1',
        MASTER_ADDR='10.0.0.1',
        PORT='29999',
        PYTHONPATH='')
    assert argv == [
        'fake_python', '-m', 'torch.distributed.run', '--nnodes=2',
        '--node_rank=1', '--master_addr=10.0.0.1', '--master_port=29999',
        '--nproc_per_node=4',
        osp.join(TOOLS, 'train.py'), 'a b.py', '--launcher', 'pytorch',
        '--cfg-options', 'x=1 2'
    ]
    assert osp.realpath(pythonpath.split('=', 1)[1]) == REPO

    _, argv = _run_script(
        'dist_test.sh', ['c.py', 'w.pth', '2', '--out', 'o'],
        tmp_path,
        PYTHON=python)
    assert argv[3:8] == [
        '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--master_port=29500', '--nproc_per_node=2'
    ]
    assert argv[8:] == [
        osp.join(TOOLS, 'test.py'), 'c.py', 'w.pth', '--launcher', 'pytorch',
        '--out', 'o'
    ]

    _, argv = _run_script(
        'test.sh', ['c.py', 'w.pth', '--work-dir', 'wd'],
        tmp_path,
        PYTHON=python)
    assert argv == [
        'fake_python',
        osp.join(TOOLS, 'test.py'), 'c.py', 'w.pth', '--launcher', 'none',
        '--work-dir', 'wd'
    ]


@pytest.mark.e2e
def test_slurm_scripts_commands(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _recorder(bin_dir / 'srun')
    path = f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'
    # the scripts check that their interpreter exists and imports torch
    # and mmengine (a recorder passes), so it must exist here
    env_python = _recorder(tmp_path / 'env_python')
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    venv_python = _recorder(venv / 'bin' / 'python')
    _, argv = _run_script(
        'slurm_train.sh', ['gpu', 'job', 'c.py', 'wd', '--amp'],
        tmp_path,
        PATH=path,
        PYTHON=env_python,
        GPUS='16',
        GPUS_PER_NODE='8',
        CPUS_PER_TASK='6',
        SRUN_ARGS='--quotatype=auto --time=1:00:00')
    assert argv == [
        'srun', '-p', 'gpu', '--job-name=job', '--gres=gpu:8',
        '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=6',
        '--kill-on-bad-exit=1', '--quotatype=auto', '--time=1:00:00',
        env_python, '-u',
        osp.join(TOOLS, 'train.py'), 'c.py', '--work-dir=wd',
        '--launcher=slurm', '--amp'
    ]
    _, argv = _run_script(
        'slurm_test.sh', ['gpu', 'job', 'c.py', 'w.pth'],
        tmp_path,
        PATH=path,
        MMPARAX_VENV=str(venv))  # without PYTHON: the venv of install.sh
    assert argv[1:] == [
        '-p', 'gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=8',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        venv_python, '-u',
        osp.join(TOOLS, 'test.py'), 'c.py', 'w.pth', '--launcher=slurm'
    ]


@pytest.mark.e2e
@pytest.mark.parametrize('name, args', [('dist_train.sh', ['c.py']),
                                        ('dist_test.sh', ['c.py', 'w']),
                                        ('test.sh', ['c.py']),
                                        ('slurm_train.sh', ['p', 'j', 'c']),
                                        ('slurm_test.sh', ['p', 'j', 'c'])])
def test_scripts_usage(name, args):
    proc = subprocess.run([osp.join(TOOLS, name), *args],
                          capture_output=True,
                          text=True,
                          timeout=60)
    assert proc.returncode == 2 and 'usage:' in proc.stderr


@pytest.mark.e2e
@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='checks the CPU-only gloo/BN path; a CUDA device is present')
def test_dist_test_two_processes_on_cpu(dist_trained):
    assert dist_trained['proc'].returncode == 0
    work_dir = dist_trained['work_dir']
    proc = run_script(
        'dist_test.sh', TINY_CFG, work_dir / 'iter_8.pth', 2, '--work-dir',
        work_dir,
        *data_options(dist_trained['data_root'], dist_trained['pretrained']),
        cwd=dist_trained['cwd'])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert 'Iter(test) [3/3]' in log  # 5 images over 2 processes
    match = re.search(r'Iter\(test\) \[3/3\]\s+aAcc: [\d.]+\s+mIoU: ([\d.]+)',
                      log)
    assert match and 0.0 <= float(match.group(1)) <= 100.0


@pytest.mark.e2e
@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='checks the CPU-only gloo/BN path; a CUDA device is present')
def test_dist_validation_scores_the_saved_checkpoints(dist_trained):
    """The scores a 2-process run logs at iterations 4 and 8 are those
    tools/test.sh gives its iter_4.pth and iter_8.pth: every rank
    validates with the buffers (BN statistics) rank 0 saves."""
    proc = dist_trained['proc']
    assert proc.returncode == 0
    logged = VAL_METRICS.findall(proc.stdout + proc.stderr)
    assert len(logged) == 2, (proc.stdout + proc.stderr)[-6000:]
    for it, scores in zip((4, 8), logged):
        test = run_script(
            'test.sh', TINY_CFG, dist_trained['work_dir'] / f'iter_{it}.pth',
            '--work-dir', dist_trained['cwd'] / f'test_{it}',
            *data_options(dist_trained['data_root'],
                          dist_trained['pretrained']),
            cwd=dist_trained['cwd'])
        log = test.stdout + test.stderr
        assert test.returncode == 0, log[-6000:]
        assert VAL_METRICS.findall(log) == [scores], it
