"""tools/analysis/benchmark_train.py on tiny Swin configs."""
import glob
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from PIL import Image

from mmparax.testing import load_tool
from mmparax.utils import build_config_model

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_SWIN = ('embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], '
             'drop_path_rate=0.1')
# method folder -> settings of its method that fit the tiny widths
TINY_METHODS = {
    'full': '',
    'lora': 'peft=dict(rank=4), ',
    'parax': 'peft=dict(hidden_dim=8, kernel_sizes=(3, ), router_hidden=4), ',
}
tool = load_tool('analysis/benchmark_train.py')
DET = '_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py'


@pytest.fixture(scope='module')
def tiny_configs(tmp_path_factory):
    """Tiny-Swin versions of the Swin-B Mask R-CNN recipes."""
    folder = tmp_path_factory.mktemp('configs')
    paths = []
    for method, peft in TINY_METHODS.items():
        base = osp.join(REPO, 'configs', method,
                        f'{method}_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py')
        path = folder / f'tiny_{method}.py'
        path.write_text(f'_base_ = [{base!r}]\n'
                        f'model = dict(backbone=dict({peft}{TINY_SWIN}))\n')
        paths.append(str(path))
    return paths


@pytest.fixture(scope='module')
def run(tiny_configs, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('bench')
    torch.set_num_threads(1)
    results = tool.main([
        *tiny_configs, '--size', '64', '--batch', '1', '--iters', '2',
        '--warmup', '1', '--threads', '1', '--no-progress', '--out-dir',
        str(out_dir)
    ])
    return results, out_dir


def rows(out_dir):
    with open(out_dir / 'results.jsonl') as f:
        return [json.loads(line) for line in f]


@pytest.mark.e2e
def test_one_row_per_config_with_exact_counts(run, tiny_configs):
    results, out_dir = run
    saved = rows(out_dir)
    assert [r['config'] for r in saved] == tiny_configs
    assert [r['method'] for r in saved] == ['Full-tuning', 'LoRA', 'ParaX']
    for row, config in zip(saved, tiny_configs):
        assert len(row['s_per_step']) == 2 and min(row['s_per_step']) > 0
        assert row['s_per_step_median'] == pytest.approx(
            sum(row['s_per_step']) / 2, abs=1e-4)
        assert row['imgs_per_s'] == pytest.approx(
            1 / row['s_per_step_median'], rel=1e-2)
        assert (row['size'], row['batch']) == ([64, 64], 1)
        backbone = build_config_model(
            Config.fromfile(config), backbone_only=True)
        params = list(backbone.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        assert row['trainable_params'] == trainable
        assert row['total_params'] == sum(p.numel() for p in params)
        # the loss reaches every trainable parameter and nothing else
        assert row['grad_mb'] == pytest.approx(4 * trainable / 2**20,
                                               abs=0.01)
    full, lora, parax = saved
    assert full['trainable_params'] == full['total_params']
    assert 0 < lora['trainable_params'] < lora['total_params'] / 10
    assert 0 < parax['trainable_params'] < parax['total_params'] / 10


@pytest.mark.e2e
def test_memory_and_ratios(run):
    _, out_dir = run
    full, lora, parax = rows(out_dir)
    for row in (full, lora, parax):
        assert row['mem_mb'] == pytest.approx(
            row['saved_mb'] + row['output_mb'], abs=0.02)
        assert row['output_mb'] > 0
    # a frozen linear layer saves no input for a weight gradient
    assert lora['saved_mb'] < 0.9 * full['saved_mb']
    assert full['thr_ratio'] == full['thr_ratio_min'] == 1
    assert full['mem_ratio'] == 1
    assert lora['mem_ratio'] == pytest.approx(
        lora['mem_mb'] / full['mem_mb'], abs=1e-3)
    # tiny Swin-B copies are not Table 15's Swin-L configs: no paper figures
    for row in (full, lora, parax):
        assert row['paper'] is None
        assert row['paper_thr_ratio'] is row['paper_mem_ratio'] is None


def _result(config, method, imgs_per_s=1.0):
    return dict(config=config, method=method, imgs_per_s=imgs_per_s,
                s_per_step_min=1 / imgs_per_s, mem_mb=10.0)


def test_paper_figures_only_beside_table15_configs(tmp_path):
    """The Table 15 configs get the paper's figures, by any relative path;
    a copy under another name, or another backbone's config of the same
    method, gets none."""
    full, parax = (osp.join(REPO, 'configs', m, f'{m}{DET}')
                   for m in ('full', 'parax'))
    copy = tmp_path / osp.basename(parax)
    copy.write_text(open(parax).read())
    swin_b = osp.join(REPO, 'configs', 'parax',
                      'parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py')
    results = [
        _result(osp.relpath(full), 'Full-tuning'),
        _result(parax, 'ParaX', 0.9),
        _result(str(copy), 'ParaX'),
        _result(swin_b, 'ParaX')
    ]
    tool.add_ratios(results)
    assert results[0]['paper']['imgs_per_s'] == 4.6
    assert results[1]['paper']['mem_gb'] == 3.2
    assert results[1]['paper_thr_ratio'] == pytest.approx(4.0 / 4.6,
                                                          abs=1e-3)
    for other in results[2:]:
        assert other['paper'] is None and other['paper_thr_ratio'] is None
    # ratios to a reference that is not Table 15's have no paper side
    results = [_result(swin_b, 'Full-tuning'), _result(parax, 'ParaX')]
    tool.add_ratios(results)
    assert results[1]['paper']['mem_gb'] == 3.2
    assert results[1]['paper_thr_ratio'] is None


@pytest.mark.e2e
def test_table_and_plot(run):
    results, out_dir = run
    table = (out_dir / 'table.md').read_text()
    assert table == tool.markdown_table(results)
    lines = [line for line in table.splitlines() if line.startswith('| ')]
    assert len(lines) == 1 + len(results)  # header and one row per config
    assert lines[3].startswith('| ParaX | 0.')
    cells = [c.strip() for c in lines[3].split('|')[1:-1]]
    assert len(cells) == 15
    assert cells[2] == '-' and cells[9] == '-'  # paper # P, thr x
    png = out_dir / 'throughput_memory.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(png) as image:
        image.verify()
        assert image.size[0] >= 1000 and image.size[1] >= 600


def test_memory_meter_counts_activations_only():
    """Linear(8, 16) -> GELU -> Linear(16, 4) on a [2, 8] input: a trained
    first layer makes GELU save its input; the second layer saves GELU's
    output for its weight gradient; weights and the input never count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    runner = tool.StepRunner(model, torch.randn(2, 8), 'float32')
    runner.measured_step()
    assert runner.saved_mb * 2**20 == 2 * (2 * 16 * 4)
    assert runner.output_mb * 2**20 == 2 * 4 * 4
    measured = [p.grad.clone() for p in model.parameters()]
    runner.step()
    for grad, p in zip(measured, model.parameters()):
        torch.testing.assert_close(grad, p.grad)
    model[0].requires_grad_(False)
    runner.measured_step()
    assert runner.saved_mb * 2**20 == 2 * 16 * 4
    assert runner.grad_mb * 2**20 == 4 * (16 * 4 + 4)


class DroppedBranch(nn.Module):
    """tanh(Linear(x)); a second tanh branch is computed and dropped."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)

    def forward(self, x):
        h = self.fc(x)
        dropped = torch.tanh(3 * h)  # saves its [2, 16] output
        del dropped
        return torch.tanh(h)


def test_memory_meter_forgets_dropped_branches():
    runner = tool.StepRunner(DroppedBranch(), torch.randn(2, 8), 'float32')
    runner.measured_step()
    # only the kept tanh's output (also the model's output) is held
    assert runner.saved_mb * 2**20 == 2 * 16 * 4
    assert runner.output_mb == 0


def test_drop_path_is_off_unless_kept(tiny_configs):
    def rates(backbone):
        return [m.drop_prob for m in backbone.modules() if hasattr(
            m, 'drop_prob')]

    assert set(rates(tool.build_backbone(tiny_configs[0]))) == {0.0}
    kept = rates(tool.build_backbone(tiny_configs[0], keep_drop_path=True))
    assert max(kept) == pytest.approx(0.1)


def test_size_is_width_then_height():
    assert tool.parse_args([]).size == [1280, 800]
    assert tool.parse_args(['--size', '256']).size == [256, 256]
    with pytest.raises(SystemExit):
        tool.parse_args(['--size', '1', '2', '3'])


@pytest.mark.e2e
def test_missing_config_is_named(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    with pytest.raises(FileNotFoundError, match='no_such_config.py'):
        tool.main([missing, '--iters', '1'])


def test_default_configs_exist():
    """Table 15: the Swin-L Mask R-CNN config of every method that has one
    (full fine-tuning included) and of ParaX without routed kernels."""
    for config in tool.DEFAULT_CONFIGS:
        assert osp.isfile(osp.join(REPO, config)), config
    every_method = glob.glob(osp.join(REPO, 'configs', '*', f'*{DET}'))
    assert len(every_method) > 1
    assert sorted(tool.DEFAULT_CONFIGS) == sorted(
        [osp.relpath(p, REPO) for p in every_method] +
        [f'configs/parax/ablations/parax-static-conv{DET}'])


@pytest.mark.e2e
def test_with_cp_rows(tiny_configs, tmp_path):
    parax = tiny_configs[-1]
    results = tool.main([
        parax, '--size', '64', '--batch', '1', '--iters', '1', '--warmup',
        '0', '--threads', '1', '--no-progress', '--with-cp', '--out-dir',
        str(tmp_path)
    ])
    plain, checkpointed = rows(tmp_path)
    assert [r['config'] for r in results] == [parax, parax]
    assert (plain['method'], checkpointed['method']) == (
        'ParaX', 'ParaX (with_cp)')
    assert checkpointed['trainable_params'] == plain['trainable_params']
    assert checkpointed['grad_mb'] == pytest.approx(plain['grad_mb'])
    # the adapters keep only their inputs for the backward pass (the
    # default keeps a few of their maps beside the frozen blocks' own)
    assert checkpointed['saved_mb'] < plain['saved_mb']
    assert checkpointed['paper'] is None  # no such row in Table 15
