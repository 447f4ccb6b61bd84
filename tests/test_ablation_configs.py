"""The ablation configs (Tables 5, 6, 11-14 and ParaX‡ of Table 15): each is
the ParaX Mask R-CNN recipe with one knob changed, and builds the model the
row describes with the trainable count pinned here."""
import importlib.util
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
ABLATIONS = CONFIGS / 'parax' / 'ablations'
SWIN_B = '_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
SWIN_L = '_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py'
STAGE3 = (None, None, 'k', None)


def _stage3(k):
    return tuple(k if v == 'k' else v for v in STAGE3)


# config -> (the knob it changes, exact trainable backbone parameters)
ROWS = {
    f'parax-m4l-r40{SWIN_B}': (dict(expert_ratio=4, hidden_dim=40), 5_473_488),
    f'parax-m2l-r72{SWIN_B}': (dict(expert_ratio=2, hidden_dim=72), 5_120_528),
    f'parax-m05l-r192{SWIN_B}': (dict(expert_ratio=0.5, hidden_dim=192),
                                 5_327_840),
    f'parax-center9{SWIN_B}': (dict(blocks_per_center=_stage3(9)),
                               5_167_324),
    f'parax-center6{SWIN_B}': (dict(blocks_per_center=_stage3(6)),
                               5_158_144),
    f'parax-center3{SWIN_B}': (dict(blocks_per_center=_stage3(3)),
                               5_148_964),
    f'parax-k3{SWIN_B}': (dict(kernel_sizes=(3, )), 4_925_920),
    f'parax-k5{SWIN_B}': (dict(kernel_sizes=(5, )), 4_975_072),
    f'parax-k7{SWIN_B}': (dict(kernel_sizes=(7, )), 5_048_800),
    f'parax-k357-nosa{SWIN_B}': (dict(scale_attention=False), 5_176_288),
    f'parax-k579-nosa{SWIN_B}': (dict(kernel_sizes=(5, 7, 9),
                                      scale_attention=False), 5_397_472),
    f'parax-k579{SWIN_B}': (dict(kernel_sizes=(5, 7, 9)), 5_416_048),
    f'parax-kaiming-normal-init{SWIN_B}': (dict(
        expert_init='kaiming_normal'), 5_194_864),
    f'parax-kaiming-uniform-init{SWIN_B}': (dict(
        expert_init='kaiming_uniform'), 5_194_864),
    f'parax-top3{SWIN_B}': (dict(top_k=_stage3(3)), 5_194_864),
    f'parax-top6{SWIN_B}': (dict(top_k=_stage3(6)), 5_194_864),
    f'parax-top12{SWIN_B}': (dict(top_k=_stage3(12)), 5_194_864),
    f'parax-parallel{SWIN_B}': (dict(layout='parallel'), 5_194_672),
    f'parax-sequential{SWIN_B}': (dict(layout='sequential'), 5_194_672),
    f'parax-relu-router{SWIN_B}': (dict(router_act='relu'), 5_194_864),
    f'parax-sigmoid-router{SWIN_B}': (dict(router_act='sigmoid'),
                                      5_194_864),
    f'parax-router8{SWIN_B}': (dict(router_hidden=8), 4_975_088),
    f'parax-router24{SWIN_B}': (dict(router_hidden=24), 5_414_640),
    f'parax-router40{SWIN_B}': (dict(router_hidden=40), 5_854_192),
    f'parax-static-conv{SWIN_L}': (dict(kernel_sizes=()), 6_994_368),
}


def test_every_row_has_a_config():
    assert sorted(p.name for p in ABLATIONS.glob('*.py')) == sorted(ROWS)
    meta = yaml.safe_load((ABLATIONS / 'metafile.yml').read_text())
    assert sorted(Path(m['Config']).name for m in meta['Models']) == \
        sorted(ROWS)
    tables = {str(m['Metadata']['Paper Table']) for m in meta['Models']}
    assert tables == {'5', '6', '11', '12', '13', '14a', '14b', '14c', '15'}
    readme = (ABLATIONS / 'README.md').read_text()
    assert all(name in readme for name in ROWS)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ROWS))
def test_only_the_knob_changes(name):
    knob, _ = ROWS[name]
    base_name = 'parax_' + name.split('_', 1)[1]
    cfg = Config.fromfile(ABLATIONS / name)
    base = Config.fromfile(CONFIGS / 'parax' / base_name)
    peft = dict(cfg.model.backbone.pop('peft'))
    base_peft = dict(base.model.backbone.pop('peft'))
    cfg, base = cfg.to_dict(), base.to_dict()
    assert cfg.pop('peft') == peft and base.pop('peft') == base_peft
    assert cfg == base
    changed = {k: v for k, v in peft.items() if base_peft.get(k) != v}
    assert {k: tuple(v) if isinstance(v, list) else v
            for k, v in changed.items()} == knob
    assert set(peft) == set(base_peft) | set(knob)


@pytest.mark.e2e
def test_trainable_counts():
    spec = importlib.util.spec_from_file_location(
        'params_table', ROOT / 'tools' / 'analysis' / 'params_table.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.rows([str(ABLATIONS / 'metafile.yml')])
    got = {Path(r['config']).name: r['trainable'] for r in rows}
    assert got == {name: count for name, (_, count) in ROWS.items()}
    # the rows whose paper # P the knob reaches
    matched = {Path(r['config']).name for r in rows if r['match']}
    assert matched == {
        f'parax-m4l-r40{SWIN_B}', f'parax-k357-nosa{SWIN_B}',
        f'parax-router8{SWIN_B}', f'parax-router40{SWIN_B}',
        f'parax-static-conv{SWIN_L}'
    }
