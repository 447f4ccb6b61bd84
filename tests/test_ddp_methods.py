"""Every method under DDP on the CPU (2 gloo processes, the configs'
``find_unused_parameters=False``): no unused parameter, the same gradients
in both processes, and the weights of one process on the whole batch."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from mmparax.testing.ddp import STEPS, train
from mmparax.testing.peft import METHODS


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
         '2', '--master_port', str(free_port()), '-m', 'mmparax.testing.ddp',
         str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert 'were not used' not in log and 'unused' not in log.lower()
    return out


@pytest.mark.e2e
@pytest.mark.parametrize('method', list(METHODS))
def test_ddp_equals_one_process(method, two_processes):
    ranks = [
        torch.load(two_processes / f'{method}_rank{r}.pth',
                   weights_only=True) for r in (0, 1)
    ]
    for step in range(STEPS):
        g0, g1 = (r['grads'][step] for r in ranks)
        # every trainable parameter has a gradient: none is unused
        assert g0.keys() == g1.keys() == ranks[0]['params'].keys()
        for name in g0:
            assert torch.equal(g0[name], g1[name]), (step, name)
        assert any(g.abs().sum() > 0 for g in g0.values())  # it trains
    one = train(method)
    assert len(one['grads']) == STEPS
    assert one['params'].keys() == ranks[0]['params'].keys()
    for name, value in one['params'].items():
        assert torch.equal(ranks[0]['params'][name],
                           ranks[1]['params'][name]), name
        # float32 sums in another order: within 1e-5
        torch.testing.assert_close(
            ranks[0]['params'][name], value, rtol=1e-5, atol=1e-5,
            msg=name)
