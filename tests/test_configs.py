"""Configs parse, build the models they promise, and match their metafiles."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
COUNT_TOOL = ROOT / 'tools' / 'analysis' / 'count_params.py'

ADE = '_upernet_8xb2-160k_ade20k-512x512.py'
# config -> (backbone type, exact trainable backbone params, lr, drop_path)
ADE20K = {
    f'parax/parax_swin-b{ADE}': ('mmparax.ParaXSwin', 5_242_992, 6e-5, 0.15),
    f'parax/parax_swin-l{ADE}': ('mmparax.ParaXSwin', 7_302_384, 3e-4, 0.3),
    f'full/full_swin-b{ADE}': ('mmparax.Swin', 86_745_016, 6e-5, 0.15),
    f'full/full_swin-l{ADE}': ('mmparax.Swin', 194_998_164, 6e-5, 0.3),
}
ALL_CONFIGS = sorted(
    str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob('*.py')
    if '_base_' not in p.parts)
METAFILES = sorted(CONFIGS.glob('*/metafile.yml'))

_models = {}


def _build(name):
    """Model of a config, built on the CPU without pretrained weights."""
    if name not in _models:
        import mmparax  # noqa: F401
        from mmengine.registry import MODELS, init_default_scope
        cfg = Config.fromfile(CONFIGS / name)
        init_default_scope(cfg.default_scope)
        assert cfg.model.backbone.init_cfg.type == 'Pretrained'
        cfg.model.backbone.init_cfg = None  # never load the checkpoint
        _models[name] = MODELS.build(cfg.model)
    return _models[name]


def _numel(params):
    return sum(p.numel() for p in params)


def test_expected_configs_exist():
    for name in ADE20K:
        assert name in ALL_CONFIGS, name
    for base in ('default_runtime.py', 'datasets/ade20k.py',
                 'models/upernet_swin.py', 'schedules/schedule_160k.py'):
        assert (CONFIGS / '_base_' / base).is_file(), base


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_parses(name):
    cfg = Config.fromfile(CONFIGS / name)
    assert 'model' in cfg, name


@pytest.mark.parametrize('name', sorted(ADE20K))
def test_ade20k_recipe(name):
    backbone_type, _, lr, drop_path = ADE20K[name]
    cfg = Config.fromfile(CONFIGS / name)
    backbone = cfg.model.backbone
    assert backbone.type == backbone_type
    assert backbone.drop_path_rate == drop_path
    assert backbone.init_cfg.checkpoint == cfg.checkpoint_file
    size = 'base' if 'swin-b' in name else 'large'
    assert cfg.checkpoint_file == \
        f'pretrain/swin_{size}_patch4_window7_224_22k.pth'

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper' and optim.loss_scale == 'dynamic'
    assert optim.optimizer == dict(
        type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
    assert optim.paramwise_cfg.custom_keys == {
        'backbone': dict(lr_mult=1.0),
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }
    # 8 GPUs x 2 images, 160k iterations with validation every 8k
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_cfg.val_interval == 8000
    assert cfg.default_hooks.checkpoint.interval == 8000
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == \
        ('LinearLR', 1e-6, 1500)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == \
        ('PolyLR', 1.0, 0.0, 1500, 160000)

    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    if backbone_type == 'mmparax.ParaXSwin':
        assert backbone.parax == dict(
            rank=128, kernel_sizes=(3, 5, 7), router_hidden=16)
        assert optim.constructor == 'mmparax.PEFTOptimWrapperConstructor'
        assert 'mmparax.PEFTCheckHook' in hooks
    else:
        assert 'parax' not in backbone
        assert 'mmparax.PEFTCheckHook' not in hooks


@pytest.mark.parametrize('name', sorted(ADE20K))
def test_ade20k_model_counts(name):
    backbone_type, trainable, _, _ = ADE20K[name]
    backbone = _build(name).backbone
    assert type(backbone).__name__ == backbone_type.split('.')[-1]
    params = list(backbone.parameters())
    n_trainable = _numel(p for p in params if p.requires_grad)
    if name != f'full/full_swin-b{ADE}':  # kept for the weight-decay test
        del _models[name]
    assert n_trainable == trainable
    if backbone_type == 'mmparax.Swin':
        assert n_trainable == _numel(params)  # full fine-tuning
    else:
        named = dict(backbone.named_parameters())
        frozen = backbone.peft_components()['pretrained']
        assert frozen and not any(named[k].requires_grad for k in frozen)


def test_longest_key_first_weight_decay():
    """'backbone' outranks 'norm': backbone norms keep the full decay."""
    from mmengine.optim import DefaultOptimWrapperConstructor
    name = f'full/full_swin-b{ADE}'
    cfg = Config.fromfile(CONFIGS / name).optim_wrapper
    model = _build(name)
    constructor = DefaultOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=cfg.optimizer), cfg.paramwise_cfg)
    groups = constructor(model).optimizer.param_groups
    decay = {id(g['params'][0]): g['weight_decay'] for g in groups}
    named = dict(model.named_parameters())
    assert decay[id(named['backbone.stages.0.blocks.0.norm1.weight'])] \
        == 0.01
    assert decay[id(named['backbone.norm0.weight'])] == 0.01
    table = 'backbone.stages.0.blocks.0.attn.w_msa.' \
        'relative_position_bias_table'
    assert decay[id(named[table])] == 0.


def test_count_params_json():
    name = f'parax/parax_swin-b{ADE}'
    cmd = [sys.executable, str(COUNT_TOOL), str(CONFIGS / name)]
    out = subprocess.run(
        cmd + ['--json', '--paper'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result['trainable_backbone'] == 5_242_992
    assert result['total_backbone'] == 91_984_168
    assert result['trainable_total'] > result['trainable_backbone']
    components = result['components']
    assert set(components) == {
        'adapters', 'expert_centers', 'output_norms', 'pretrained'
    }
    assert components['pretrained']['trainable'] == 0
    assert components['pretrained']['total'] == 86_741_176
    assert sum(c['trainable'] for c in components.values()) == 5_242_992
    assert result['paper_trainable_backbone_m'] == 5.2


def test_metafiles_point_at_configs():
    assert {p.parent.name for p in METAFILES} >= {'parax', 'full'}
    for metafile in METAFILES:
        meta = yaml.safe_load(metafile.read_text())
        collections = {c['Name'] for c in meta['Collections']}
        assert meta['Models'], metafile
        for model in meta['Models']:
            config = ROOT / model['Config']
            assert config.is_file(), model['Config']
            assert config.parent == metafile.parent, model['Config']
            assert model['Name'] == config.stem
            assert model['In Collection'] in collections
            assert model['Metadata']['Trainable Parameters']
            for result in model['Results']:
                assert result['Task'] == 'Semantic Segmentation'
                assert result['Dataset'] == 'ADE20K'
                assert isinstance(result['Metrics']['mIoU'], float)
