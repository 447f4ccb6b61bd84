"""A run killed while it writes a checkpoint (full, PEFT, best or
``last_checkpoint``) resumes from its last complete checkpoint, with
``max_keep_ckpts=1``, and leaves no cut-off file behind."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmparax.apis.peft_checkpoint import load_safetensors
from mmparax.testing import run_tool, short_demo_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOTAL, INTERVAL = 6, 2
ENV = dict(OMP_NUM_THREADS='1')

# Runs tools/train.py and SIGKILLs its process group in the middle of the
# N-th write of the file NAME (its partial ``.NAME.part`` counts as NAME):
# half of the bytes of that write reach the file first.
KILLER = r'''
import builtins, io, os, os.path as osp, runpy, signal, sys
import torch

name, count = sys.argv[1], int(sys.argv[2])
seen = [0]


def target(path):
    if not isinstance(path, (str, os.PathLike)):
        return False
    base = osp.basename(os.fspath(path))
    if base.startswith('.') and base.endswith('.part'):
        base = base[1:-len('.part')]
    if base != name:
        return False
    seen[0] += 1
    return seen[0] == count


def die(f, data):
    f.write(data[:len(data) // 2])
    f.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)


class Dying:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        die(self._f, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, attr):
        return getattr(self._f, attr)


real_open, real_save = builtins.open, torch.save


def open_(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return Dying(f) if 'w' in mode and target(file) else f


def save(obj, f, *args, **kwargs):
    if target(f):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        with real_open(f, 'wb') as out:
            die(out, buffer.getvalue())
    return real_save(obj, f, *args, **kwargs)


builtins.open, torch.save = open_, save
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp('atomic')
    (root / 'killer.py').write_text(KILLER)
    return Path(
        short_demo_config(
            str(root), TOTAL, INTERVAL, max_keep_ckpts=1, num_train=8,
            num_val=2))


def assert_complete(work_dir):
    """Every checkpoint under its real name loads."""
    for name in os.listdir(work_dir):
        if name.endswith('.pth'):
            torch.load(work_dir / name, map_location='cpu', weights_only=False)
        elif name.endswith('.safetensors'):
            load_safetensors(str(work_dir / name))


def kill_in_save(config, work_dir, name, count):
    work_dir.mkdir()
    env = dict(os.environ, **ENV)
    env.pop('MMPARAX_TRUSTED_CHECKPOINTS', None)
    log = work_dir.parent / f'{work_dir.name}_killed.log'
    with open(log, 'w') as out:
        proc = subprocess.run(
            [sys.executable, str(config.parent / 'killer.py'), name,
             str(count), osp.join(REPO, 'tools', 'train.py'), str(config),
             '--work-dir', str(work_dir)],
            cwd=str(work_dir.parent), env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-4000:]


# (file, which write of it, iteration the resumed run starts from)
KILLS = [
    ('iter_4.pth', 1, 2),
    ('iter_4_peft.safetensors', 1, 4),
    ('best_mIoU_iter_2.pth', 1, 2),
    ('last_checkpoint', 3, 2),  # 1, 2: iter_2 and its re-save after best
]


@pytest.mark.e2e
@pytest.mark.parametrize('name,count,resumed_at', KILLS)
def test_kill_during_save_resumes_from_last_complete_checkpoint(
        config, tmp_path, name, count, resumed_at):
    work_dir = tmp_path / 'run'
    kill_in_save(config, work_dir, name, count)
    assert_complete(work_dir)
    proc = run_tool('train.py', config, '--work-dir', work_dir, '--resume',
                    cwd=tmp_path, env=ENV, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    resumed = re.search(r'resumed epoch: \d+, iter: (\d+)', log)
    assert resumed and int(resumed.group(1)) == resumed_at, log[-4000:]
    assert f'Iter(train) [{TOTAL}/{TOTAL}]' in log
    names = sorted(os.listdir(work_dir))
    assert not [n for n in names if n.endswith('.part')], names
    assert f'iter_{TOTAL}.pth' in names
    assert f'iter_{TOTAL}_peft.safetensors' in names
    assert (work_dir / 'last_checkpoint').read_text().endswith(
        f'iter_{TOTAL}.pth')
    assert_complete(work_dir)
    if name.endswith('_peft.safetensors'):  # written by the resumed run
        assert re.search(rf'PEFT checkpoint \S*{name}', log)
    # the kept full checkpoints, each with its PEFT file
    full = [n for n in names if n.endswith('.pth') and '_peft' not in n]
    assert sorted(n[:-4] + '_peft.safetensors' for n in full) == sorted(
        n for n in names if n.endswith('_peft.safetensors'))
