"""``tools/check_env.py`` on the CPU: every check runs and passes."""
import re

import pytest
import torch

from mmparax.testing import check_ok, load_tool, run_tool
from mmparax.testing.peft import PAIRS


@pytest.mark.e2e
def test_check_env_passes(tmp_path):
    proc = run_tool('check_env.py', '--cpu', '--amp-iters', '4',
                    cwd=tmp_path, env=dict(OMP_NUM_THREADS='1'))
    check_ok(proc)
    out = proc.stdout
    if not torch.cuda.is_available():
        assert 'CUDA        absent' in out
    for method, host in PAIRS:
        assert f'float16 {method} x {host}' in out
    rows = len(PAIRS) + 3  # mmcv ops, the scan, the AMP run
    assert f'{rows} / {rows} checks passed' in out
    assert re.search(r'AMP training \(4 iterations\) +pass ', out)


def test_a_failing_check_is_reported():
    module = load_tool('check_env.py')
    rows = module.run_checks([('fine', lambda: 'ok'),
                              ('broken', lambda: 1 / 0)])
    assert [r[1] for r in rows] == ['pass', 'FAIL']
    assert rows[1][3] == 'ZeroDivisionError: division by zero'
    assert 'broken  FAIL' in module.table(rows)
