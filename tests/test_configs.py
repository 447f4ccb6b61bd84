"""Configs parse, build the models they promise, and match their metafiles."""
import json
import re
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
    f'parax/parax_swin-b{ADE}': ('mmparax.Swin', 5_242_992, 6e-5, 0.15),
    f'parax/parax_swin-l{ADE}': ('mmparax.Swin', 7_302_384, 3e-4, 0.3),
    f'full/full_swin-b{ADE}': ('mmparax.Swin', 86_745_016, 6e-5, 0.15),
    f'full/full_swin-l{ADE}': ('mmparax.Swin', 194_998_164, 6e-5, 0.3),
    f'parax/parax_convnext-b{ADE}':
    ('mmparax.ConvNeXt', 6_630_912, 3e-4, 0.25),
    f'parax/parax_convnext-l{ADE}':
    ('mmparax.ConvNeXt', 9_403_200, 3e-4, 0.35),
    f'full/full_convnext-b{ADE}': ('mmparax.ConvNeXt', 87_568_256, 6e-5, 0.25),
    f'full/full_convnext-l{ADE}':
    ('mmparax.ConvNeXt', 196_233_024, 6e-5, 0.35),
}
MRCNN = '_mask-rcnn_fpn_8xb2-1x_coco.py'
PANOPTIC = '_panoptic-fpn_8xb2-1x_coco-panoptic.py'
# config -> (backbone type, exact trainable backbone params, drop_path)
COCO = {
    f'parax/parax_swin-b{MRCNN}': ('mmparax.Swin', 5_194_864, 0.15),
    f'parax/parax_swin-l{MRCNN}': ('mmparax.Swin', 7_302_384, 0.2),
    f'parax/parax_convnext-b{MRCNN}':
    ('mmparax.ConvNeXt', 6_456_000, 0.2),
    f'parax/parax_convnext-l{MRCNN}':
    ('mmparax.ConvNeXt', 9_156_096, 0.35),
    f'full/full_swin-b{MRCNN}': ('mmparax.Swin', 86_745_016, 0.15),
    f'full/full_swin-l{MRCNN}': ('mmparax.Swin', 194_998_164, 0.2),
    f'full/full_convnext-b{MRCNN}': ('mmparax.ConvNeXt', 87_568_256, 0.2),
    f'full/full_convnext-l{MRCNN}': ('mmparax.ConvNeXt', 196_233_024, 0.35),
    f'parax/parax_swin-b{PANOPTIC}': ('mmparax.Swin', 5_242_992, 0.3),
    f'parax/parax_swin-l{PANOPTIC}': ('mmparax.Swin', 7_302_384, 0.3),
    f'parax/parax_convnext-b{PANOPTIC}':
    ('mmparax.ConvNeXt', 6_456_000, 0.2),
    f'parax/parax_convnext-l{PANOPTIC}':
    ('mmparax.ConvNeXt', 9_156_096, 0.25),
    f'full/full_swin-b{PANOPTIC}': ('mmparax.Swin', 86_745_016, 0.3),
    f'full/full_swin-l{PANOPTIC}': ('mmparax.Swin', 194_998_164, 0.3),
    f'full/full_convnext-b{PANOPTIC}': ('mmparax.ConvNeXt', 87_568_256, 0.2),
    f'full/full_convnext-l{PANOPTIC}':
    ('mmparax.ConvNeXt', 196_233_024, 0.25),
}
CHECKPOINTS = {
    'swin-b': 'pretrain/swin_base_patch4_window7_224_22k.pth',
    'swin-l': 'pretrain/swin_large_patch4_window7_224_22k.pth',
    'convnext-b': 'pretrain/convnext_base_22k_224.pth',
    'convnext-l': 'pretrain/convnext_large_22k_224.pth',
}
# force_fp16 and head_init='constructor': the reference's fp16 adapters and
# heads that keep their constructor initialisation
DEFAULT_PARAX = dict(
    type='ParaX', hidden_dim=128, kernel_sizes=(3, 5, 7), router_hidden=16,
    force_fp16=True)
CONVNEXT_PARAX = dict(DEFAULT_PARAX, layer_init='trunc_normal')
# config -> the ParaX settings of its recipe
PARAX = {
    name: (CONVNEXT_PARAX if 'ConvNeXt' in cfg[0] else DEFAULT_PARAX)
    for name, cfg in {**ADE20K, **COCO}.items()
    if name.startswith('parax/')
}
PARAX[f'parax/parax_convnext-b{ADE}'] = dict(CONVNEXT_PARAX, router_hidden=24)
PARAX[f'parax/parax_convnext-l{ADE}'] = dict(CONVNEXT_PARAX, router_hidden=24)
PARAX[f'parax/parax_swin-b{MRCNN}'] = dict(
    DEFAULT_PARAX, layer_scale=1e-5, res_scale=None)
# (task, dataset) of a metafile result -> its metrics
RESULT_METRICS = {
    ('Semantic Segmentation', 'ADE20K'): {'mIoU'},
    ('Semantic Segmentation', 'Potsdam'): {'mIoU'},
    ('Semantic Segmentation', 'LoveDA'): {'mIoU'},
    ('Image Classification', 'CIFAR-100'): {'Top 1 Accuracy'},
    ('Image Classification', 'SVHN'): {'Top 1 Accuracy'},
    ('Image Classification', 'Food-101'): {'Top 1 Accuracy'},
    ('Image Classification', 'ImageNet-R'): {'Top 1 Accuracy'},
    ('Object Detection', 'COCO'): {'box AP', 'box AP50', 'box AP75'},
    ('Instance Segmentation', 'COCO'): {'mask AP', 'mask AP50', 'mask AP75'},
    ('Panoptic Segmentation', 'COCO Panoptic'): {'PQ', 'SQ', 'RQ'},
}
ALL_CONFIGS = sorted(
    str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob('*.py')
    if '_base_' not in p.parts)
METAFILES = sorted(CONFIGS.rglob('metafile.yml'))

_models = {}


def _build(name):
    """Model of a config, built on the CPU without pretrained weights."""
    if name not in _models:
        from mmengine.registry import MODELS, init_default_scope

        import mmparax  # noqa: F401
        cfg = Config.fromfile(CONFIGS / name)
        init_default_scope(cfg.default_scope)
        assert cfg.model.backbone.init_cfg.type == 'Pretrained'
        cfg.model.backbone.init_cfg = None  # never load the checkpoint
        _models[name] = MODELS.build(cfg.model)
    return _models[name]


def _build_backbone(name):
    """Backbone of a config only, built like :func:`_build`."""
    from mmengine.registry import MODELS, init_default_scope

    import mmparax  # noqa: F401
    cfg = Config.fromfile(CONFIGS / name)
    init_default_scope(cfg.default_scope)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model.backbone)


def _backbone_token(name):
    return Path(name).name.split('_')[1]


def _numel(params):
    return sum(p.numel() for p in params)


def test_expected_configs_exist():
    for name in {**ADE20K, **COCO}:
        assert name in ALL_CONFIGS, name
    for base in ('default_runtime.py', 'datasets/ade20k.py',
                 'models/upernet_swin.py', 'schedules/schedule_160k.py',
                 'models/upernet_convnext.py', 'det_runtime.py',
                 'datasets/coco_instance.py', 'datasets/coco_panoptic.py',
                 'models/mask-rcnn_fpn.py', 'models/panoptic-fpn.py',
                 'schedules/schedule_1x.py'):
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
    assert cfg.checkpoint_file == CHECKPOINTS[_backbone_token(name)]

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
    # the poly decay spans 0-160k and the warm-up multiplies it (mmengine
    # schedulers end one step before `end`); see tests/test_recipes.py
    assert (warmup.type, warmup.start_factor, warmup.end) == \
        ('LinearLR', 1e-6, 1501)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == \
        ('PolyLR', 1.0, 0.0, 0, 160001)

    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    if name in PARAX:
        assert backbone.peft == PARAX[name]
        assert 'mmparax.PEFTCheckHook' in hooks
        # the rest is the full fine-tuning recipe of the same backbone
        full = Config.fromfile(CONFIGS / name.replace('parax', 'full'))
        assert cfg.head_init == 'constructor'
        assert set(cfg.keys()) == set(full.keys()) | {
            'custom_hooks', 'head_init', 'peft'
        }
        assert cfg.peft == backbone.peft  # the backbone's setting, once
        backbone.pop('peft')
        assert backbone == full.model.backbone
    else:
        assert 'peft' not in backbone
        assert 'mmparax.PEFTCheckHook' not in hooks
    # frozen parameters never reach the optimizer, in every config
    assert optim.constructor == 'mmparax.PEFTOptimWrapperConstructor'


@pytest.mark.parametrize('name', sorted(COCO))
def test_coco_recipe(name):
    backbone_type, _, drop_path = COCO[name]
    cfg = Config.fromfile(CONFIGS / name)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    assert backbone.type == backbone_type
    assert backbone.drop_path_rate == drop_path
    assert backbone.init_cfg.checkpoint == cfg.checkpoint_file
    assert cfg.checkpoint_file == CHECKPOINTS[_backbone_token(name)]
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    widths = [128, 256, 512, 1024] if '-b_' in name else \
        [192, 384, 768, 1536]
    assert cfg.model.neck.in_channels == widths

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper' and optim.loss_scale == 'dynamic'
    assert optim.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.paramwise_cfg.custom_keys == {
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }
    # 8 GPUs x 2 images, 12 epochs, steps at 8 and 11, 500 warm-up iters
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert (cfg.train_cfg.type, cfg.train_cfg.max_epochs) == \
        ('EpochBasedTrainLoop', 12)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.by_epoch, warmup.end) \
        == ('LinearLR', 0.001, False, 501)
    assert (steps.type, steps.milestones, steps.gamma) == \
        ('MultiStepLR', [8, 11], 0.1)
    train_pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert (resize.type, resize.scale) == ('Resize', (1333, 800))
    assert 'RandomFlip' in train_pipeline

    model = cfg.model
    if name.endswith(PANOPTIC):
        assert model.type == 'PanopticFPN'
        assert cfg.train_dataloader.dataset.type == \
            'mmparax.CocoPanopticDataset'
        assert cfg.test_evaluator.type == 'CocoPanopticMetric'
        head = model.semantic_head
        assert (head.type, head.num_things_classes, head.num_stuff_classes,
                head.inner_channels, head.norm_cfg.num_groups,
                head.loss_seg.loss_weight) == \
            ('PanopticFPNHead', 80, 53, 128, 32, 0.5)
        assert model.panoptic_fusion_head.type == 'HeuristicFusionHead'
        assert model.test_cfg.rcnn.score_thr == 0.6
        assert model.test_cfg.panoptic.stuff_area_limit == 4096
    else:
        assert model.type == 'MaskRCNN'
        assert cfg.train_dataloader.dataset.type == 'mmparax.CocoDataset'
        assert cfg.test_evaluator.metric == ['bbox', 'segm']
        assert model.roi_head.bbox_head.num_classes == 80

    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    if name in PARAX:
        assert backbone.peft == PARAX[name]
        assert 'mmparax.PEFTCheckHook' in hooks
        # the rest is the full fine-tuning recipe of the same backbone
        full = Config.fromfile(CONFIGS / name.replace('parax', 'full'))
        assert cfg.head_init == 'constructor'
        assert set(cfg.keys()) == set(full.keys()) | {
            'custom_hooks', 'head_init', 'peft'
        }
        assert cfg.peft == backbone.peft  # the backbone's setting, once
        backbone.pop('peft')
        assert backbone == full.model.backbone
    else:
        assert 'peft' not in backbone
        assert 'mmparax.PEFTCheckHook' not in hooks
    # frozen parameters never reach the optimizer, in every config
    assert optim.constructor == 'mmparax.PEFTOptimWrapperConstructor'


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(COCO))
def test_coco_backbone_counts(name):
    backbone_type, trainable, _ = COCO[name]
    backbone = _build_backbone(name)
    assert type(backbone).__name__ == backbone_type.split('.')[-1]
    params = list(backbone.parameters())
    n_trainable = _numel(p for p in params if p.requires_grad)
    n_total = _numel(params)
    del backbone, params
    assert n_trainable == trainable
    if name not in PARAX:
        assert n_trainable == n_total  # full fine-tuning


@pytest.mark.slow
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
    if name not in PARAX:
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


@pytest.mark.e2e
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
    # the upstream notices the other tools hide
    assert 'avg_non_ignore' not in out.stderr
    assert 'build_loss' not in out.stderr
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


@pytest.mark.e2e
def test_count_params_help_example_works(capsys):
    """The --cfg-options example of --help changes the count of a config
    (the tiny ParaX Swin: hidden_dim 8)."""
    from mmparax.testing import load_tool
    tool = load_tool('analysis/count_params.py')
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    help_text = ' '.join(capsys.readouterr().out.split())
    (example, ) = re.findall(r'e\.g\. (\S+=\S+)\)?', help_text)
    assert example == 'model.backbone.peft.hidden_dim=64'
    tiny = str(ROOT / 'tests' / 'configs' /
               'tiny_parax_swin_upernet_ade20k.py')
    base = tool.main([tiny, '--json'])
    changed = tool.main([tiny, '--json', '--cfg-options', example])
    assert changed['trainable_backbone'] > base['trainable_backbone']


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
            # the paper prints no # P for some ablation rows
            assert model['Metadata'].get('Trainable Parameters') or \
                model['Metadata'].get('Paper Table')
            for result in model['Results']:
                metrics = RESULT_METRICS[(result['Task'], result['Dataset'])]
                if 'Paper Table' in model['Metadata']:  # AP^b / AP^m only
                    assert result['Metrics'] and \
                        set(result['Metrics']) <= metrics
                else:
                    assert set(result['Metrics']) == metrics
                assert all(
                    isinstance(v, float) for v in result['Metrics'].values())
