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

import pytest
import torch

from mmparax.engine.hooks.rng_state_hook import (get_rng_state,
                                                 set_rng_state)
from mmparax.testing import (make_ade20k, run_tool, swin_to_microsoft,
                             tiny_swin_state_dict, write_checkpoint)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CFG = osp.join(REPO, 'configs', 'demo',
                    'parax_swin-tiny_upernet_1xb4-300i_demo-64x64.py')
TOTAL, INTERVAL = 8, 4  # iterations; checkpoint interval
ENV = dict(OMP_NUM_THREADS='1')
NO_HOOK = ('--cfg-options', 'default_hooks.rng_state.enabled=False')

# The demo recipe (drop path 0.1, one data worker, fp32 AdamW, random
# augmentations), shortened: a checkpoint every INTERVAL iterations and a
# validation right after it (validation draws random numbers too).
CONFIG = """\
_base_ = [{demo!r}]
data_root = {data_root!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(backbone=dict(init_cfg=dict(checkpoint={pretrained!r})))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)
]
train_cfg = dict(max_iters={total}, val_interval={interval})
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={interval}, max_keep_ckpts=-1))
custom_hooks = [dict(type='mmparax.PEFTCheckHook')]
"""


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    data_root = make_ade20k(
        str(root / 'ade'), num_train=16, num_val=4, img_size=(64, 64),
        num_classes=8, seed=0)
    pretrained = write_checkpoint(
        str(root / 'swin.pth'), swin_to_microsoft(tiny_swin_state_dict(0)))
    path = root / 'resume_demo.py'
    path.write_text(
        CONFIG.format(
            demo=DEMO_CFG, data_root=data_root, pretrained=pretrained,
            total=TOTAL, interval=INTERVAL))
    return path


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


def test_killed_and_resumed_run_is_bit_identical(config, tmp_path):
    train(config, tmp_path / 'straight')
    log = train_killed(config, tmp_path / 'killed')
    assert 'RNGStateHook: restored the RNG states' in log
    assert 'NOT bit-identical' not in log
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
