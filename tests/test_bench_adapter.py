"""tools/analysis/bench_adapter.py at tiny shapes."""
import pytest
import torch

from mmparax.testing import load_tool

tool = load_tool('analysis/bench_adapter.py')
TINY = ['--crop', '128', '--depths', '1', '1', '2', '1', '--embed-dims', '32',
        '--hidden-dim', '32', '--router-hidden', '4', '--iters', '1',
        '--warmup', '0', '--threads', '1']


@pytest.mark.e2e
def test_saved_memory_of_every_path_against_a_revision():
    torch.manual_seed(0)
    *stages, summary = tool.main([*TINY, '--baseline', 'HEAD'])
    assert [s['stage'] for s in stages] == [0, 1, 2, 3]
    for path in ('default', 'force_fp16', 'with_cp'):
        assert f'base_saved_{path}_mb' in summary
    assert summary['default_over_ref'] <= 0.5
    assert summary['force_fp16_over_ref'] <= 0.5
    assert summary['saved_with_cp_mb'] < summary['saved_default_mb']
    assert stages[0]['saved_force_fp16_mb'] < stages[0]['saved_default_mb']
    assert summary['time_ratio'] > 0


def test_unknown_revision_is_named():
    with pytest.raises(SystemExit, match='--baseline no-such-rev'):
        tool.load_revision('no-such-rev')
