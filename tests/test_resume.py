"""``kill -9`` then ``tools/train.py --resume`` trains bit-identically to an
uninterrupted run, drop path included, thanks to ``mmparax.RNGStateHook``
(RNG states saved in checkpoints and restored after the data loader's
fast-forward); without the hook the resumed weights drift."""
import io
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmparax.engine.hooks.rng_state_hook import get_rng_state, set_rng_state
from mmparax.testing import check_weights_only, run_tool, short_demo_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOTAL, INTERVAL = 8, 4  # iterations; checkpoint interval
ENV = dict(OMP_NUM_THREADS='1')
NO_HOOK = ('--cfg-options', 'default_hooks.rng_state.enabled=False')


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    # a validation right after each checkpoint (it draws random numbers too)
    return Path(
        short_demo_config(
            str(tmp_path_factory.mktemp('resume')), TOTAL, INTERVAL,
            extra="custom_hooks = [dict(type='mmparax.PEFTCheckHook')]\n"))


def train(config, work_dir, *args):
    proc = run_tool('train.py', config, '--work-dir', work_dir, *args,
                    cwd=work_dir.parent, env=ENV, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def train_killed(config, work_dir, *args):
    """Start a run, SIGKILL it once a checkpoint is complete (mmengine
    writes ``last_checkpoint`` after the file), resume it to the end."""
    work_dir.mkdir()
    env = dict(os.environ, **ENV)
    env.pop('MMPARAX_TRUSTED_CHECKPOINTS', None)
    marker = work_dir / 'last_checkpoint'
    with open(work_dir.parent / f'{work_dir.name}_killed.log', 'w') as out:
        proc = subprocess.Popen(
            [sys.executable, osp.join(REPO, 'tools', 'train.py'),
             str(config), '--work-dir', str(work_dir), *args],
            cwd=str(work_dir.parent), env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 240
        while (proc.poll() is None and not marker.exists()
               and time.time() < deadline):
            time.sleep(0.01)
        if proc.poll() is None:  # its data worker goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the run ended before the kill'
    log = train(config, work_dir, '--resume', *args)
    resumed = re.search(r'resumed epoch: \d+, iter: (\d+)', log)
    assert resumed and INTERVAL <= int(resumed.group(1)) < TOTAL, log[-4000:]
    return log


def final_state(work_dir):
    ckpt = torch.load(
        work_dir / f'iter_{TOTAL}.pth', map_location='cpu',
        weights_only=False)
    return ckpt, ckpt['state_dict']


def differing(state_a, state_b):
    assert state_a.keys() == state_b.keys()
    return [k for k in state_a if not torch.equal(state_a[k], state_b[k])]


@pytest.mark.e2e
def test_killed_and_resumed_run_is_bit_identical(config, tmp_path,
                                                  monkeypatch):
    # no key, no record: nothing but the work dir is needed to resume
    config_home = tmp_path / 'config_home'
    config_home.mkdir()
    monkeypatch.setenv('XDG_CONFIG_HOME', str(config_home))
    train(config, tmp_path / 'straight')
    log = train_killed(config, tmp_path / 'killed')
    assert 'RNGStateHook: restored the RNG states' in log
    assert 'NOT bit-identical' not in log
    assert 'weights_only=False' not in log
    assert not (config_home / 'mmparax').exists()  # no key made
    assert not list((tmp_path / 'killed').glob('.*'))
    check_weights_only(tmp_path / 'killed')
    ckpt, state = final_state(tmp_path / 'killed')
    _, reference = final_state(tmp_path / 'straight')
    assert len(state) > 100
    assert differing(state, reference) == []
    # one entry per rank, loadable without unpickling objects
    states = ckpt['rng_states']
    assert isinstance(states, list) and len(states) == 1
    buffer = io.BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded[0]['torch'], states[0]['torch'])


@pytest.mark.e2e
def test_resume_without_hook_drifts(config, tmp_path):
    train(config, tmp_path / 'straight', *NO_HOOK)
    log = train_killed(config, tmp_path / 'killed', *NO_HOOK)
    assert 'RNGStateHook' not in log.split('resumed epoch')[-1]
    _, state = final_state(tmp_path / 'killed')
    ckpt, reference = final_state(tmp_path / 'straight')
    assert 'rng_states' not in ckpt
    assert differing(state, reference)  # drop path drew other numbers

    # resuming such a checkpoint with the hook says it is not exact
    work_dir = tmp_path / 'old_checkpoint'
    work_dir.mkdir()
    old = work_dir / f'iter_{INTERVAL}.pth'
    shutil.copy(tmp_path / 'straight' / old.name, old)
    log = train(config, work_dir, '--resume', old, '--trust-checkpoint', old,
                '--cfg-options', f'train_cfg.max_iters={INTERVAL + 1}')
    assert re.search(
        r'WARNING - RNGStateHook: resuming, the checkpoint holds no RNG '
        r'states .*NOT bit-identical', log), log[-4000:]
    assert f'Iter(train) [{INTERVAL + 1}/{INTERVAL + 1}]' in log


def test_rng_state_round_trip():
    import random

    import numpy as np
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    assert set_rng_state(state) == []
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
