"""The generic host: any registered backbone by config and hints.

The contract every host keeps (switched off = the backbone it wraps, the
freeze, gradients, checkpointing, both scopes) runs on the tiny generic hosts
in tests/test_peft_contract.py. Here: what the hints mean, where the sites
read, the errors that name the hint to add, official checkpoints, and the
configs of PoolFormer-S12, ResNet-50 and ConvNeXt-V2-T (timm) with ParaX,
LoRA and AdaptFormer: exact trainable counts from each method's formula, and
two training iterations through tools/train.py.
"""
import glob
import json
import math
import os.path as osp
import re
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmparax.models import AnyBackbone
from mmparax.peft import PEFTMethod, PEFTModule
from mmparax.registry import PEFT_METHODS
from mmparax.testing import (
    check_ok,
    make_ade20k,
    run_tool,
    two_iteration_options,
    write_checkpoint,
)
from mmparax.testing.generic import official_state_dict
from mmparax.testing.peft import GENERIC_BACKBONES, HOSTS, build_pair

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'anybackbone')
ADE = '_upernet_8xb2-160k_ade20k-512x512.py'


class Probe(PEFTModule):
    """Records its input; returns it unchanged (a parallel site: zero)."""

    def __init__(self, parallel):
        super().__init__()
        self.parallel = parallel
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x, hw_shape):
        self.seen = x
        return x * 0 if self.parallel else x * self.weight


class GenericProbe(PEFTMethod):

    def attach(self, host):
        self.add_site_modules(
            host, lambda c, site, i: Probe(site == 'block_parallel'))


@pytest.fixture
def methods(monkeypatch):
    """The registry of methods with GenericProbe, as it was afterwards."""
    monkeypatch.setattr(PEFT_METHODS, '_module_dict',
                        dict(PEFT_METHODS._module_dict))
    PEFT_METHODS.register_module(module=GenericProbe)


def _tokens(x):
    return x.flatten(2).transpose(1, 2)


# -- hints -----------------------------------------------------------------
def test_family_hints_declare_sites_and_layers():
    pool = HOSTS['AnyPoolFormer'][0]
    assert pool.family == 'PoolFormer'
    assert list(pool.block_sites) == [
        'post_block', 'block_parallel', 'mixer_in', 'mixer_out', 'mlp_in',
        'mlp_out']
    assert pool.layer_aliases == dict(fc1='network.*.*.mlp.fc1',
                                      fc2='network.*.*.mlp.fc2')
    resnet = HOSTS['AnyResNet'][0]
    assert list(resnet.block_sites) == ['post_block', 'block_parallel']
    assert set(resnet.layer_aliases) == {'conv1', 'conv3'}
    assert HOSTS['AnyTIMMBackbone'][0].family == 'timm:convnextv2_*'
    # a hint replaces the family's; the same hints give the same class
    cls = AnyBackbone.host_class(GENERIC_BACKBONES['AnyPoolFormer'],
                                 branches=dict(mlp='mlp'))
    assert list(cls.block_sites)[2:] == ['mlp_in', 'mlp_out']
    assert cls is AnyBackbone.host_class(GENERIC_BACKBONES['AnyPoolFormer'],
                                         branches=dict(mlp='mlp'))


def test_the_host_is_the_backbone_itself():
    model = build_pair('AnyPoolFormer')
    from mmpretrain.models.backbones import PoolFormer
    assert isinstance(model, PoolFormer) and isinstance(model, AnyBackbone)
    assert type(model).__name__ == 'AnyPoolFormer'
    assert [w for w, _ in model.peft_stages()] == [16, 24, 32, 48]
    assert [len(b) for _, b in model.peft_stages()] == [2, 2, 3, 2]
    assert model.new_module_names() == ['norm0', 'norm2', 'norm4', 'norm6']
    assert build_pair('AnyResNet').new_module_names() == []


def test_building_leaves_batchnorm_statistics_alone():
    """The forward that finds the stage widths runs in eval mode."""
    model = build_pair('AnyResNet')
    torch.manual_seed(0)
    backbone = dict(GENERIC_BACKBONES['AnyResNet'],
                    type=HOSTS['AnyResNet'][0].upstream)
    upstream = MODELS.build(backbone)
    for (name, a), b in zip(model.state_dict().items(),
                            upstream.state_dict().values()):
        assert torch.equal(a, b), name
    assert model.training


def test_frozen_batchnorm_statistics_stay_while_the_method_trains():
    model = build_pair('AnyResNet', dict(type='AdaptFormer', hidden_dim=4))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if 'running_' in k or 'num_batches' in k}
    sum(o.mean() for o in model(torch.randn(2, 3, 32, 32))).backward()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    full = build_pair('AnyResNet')  # full fine-tuning
    assert all(m.training for m in full.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_a_host_without_output_norms_builds_without_a_method():
    """A hand-written host declares its output norms (``output_norm``);
    without them nothing is assumed (ResNet has no ``norm0``)."""
    from mmpretrain.models.backbones import ResNet

    from mmparax.models import PEFTHostMixin

    class ResNetHost(PEFTHostMixin, ResNet):

        def __init__(self, peft=None, **kwargs):
            super().__init__(**kwargs)
            self.init_peft(peft)

        def peft_stages(self):
            return [(getattr(self, n)[0].out_channels, list(getattr(self, n)))
                    for n in self.res_layers]

    kwargs = dict(depth=18, base_channels=4, out_indices=(0, 1, 2, 3))
    model = ResNetHost(**kwargs)
    assert model.new_module_names() == []
    groups = model.peft_components()
    assert groups['output_norms'] == []
    assert len(groups['pretrained']) == len(list(model.parameters()))


@pytest.mark.parametrize('hints, match', [
    (dict(nope=1), "building mmpretrain.PoolFormer: .*'nope'.* goes to the "
     'backbone'),
    (dict(blocks='NoSuchBlock'), 'matches no module; give the hint blocks='),
    (dict(branches=dict(mlp='nope')), "a block has no submodule 'nope'"),
    (dict(stages=r'^(x)'), 'does not match the block network.0.0'),
])
def test_bad_hints_are_named(hints, match):
    with pytest.raises((TypeError, ValueError), match=match):
        AnyBackbone(backbone=GENERIC_BACKBONES['AnyPoolFormer'], **hints)


def test_a_backbone_without_family_needs_the_blocks_hint():
    backbone = dict(type='mmpretrain.MobileNetV2', out_indices=(7, ))
    with pytest.raises(ValueError, match='give at least blocks='):
        AnyBackbone(backbone=backbone)
    with pytest.raises(KeyError, match="name it with its scope"):
        AnyBackbone(backbone=dict(type='NoSuchBackbone'))
    with pytest.raises(TypeError, match=r"unknown hint\(s\) \['nope'\]"):
        AnyBackbone.host_class(backbone, blocks='InvertedResidual', nope=1)
    model = AnyBackbone(backbone=backbone, blocks='InvertedResidual',
                        peft=dict(type='ParaX', hidden_dim=4,
                                  router_hidden=4))
    assert len(model.peft_stages()) == 7  # the blocks under layer1..layer7
    outs = model(torch.randn(1, 3, 64, 64))
    assert outs[-1].shape == (1, 1280, 2, 2)
    # its blocks change width without a shortcut module
    model = AnyBackbone(backbone=backbone, blocks='InvertedResidual',
                        peft=dict(type='AdaptFormer', hidden_dim=4))
    with pytest.raises(ValueError, match='give the hint shortcut='):
        model(torch.randn(1, 3, 64, 64))


# -- what each site reads ----------------------------------------------------
def test_sites_read_the_block_and_its_branches(methods):
    sites = ['post_block', 'block_parallel', 'mixer_in', 'mlp_out']
    model = build_pair('AnyPoolFormer', dict(type='GenericProbe', sites=sites),
                       drop_path_rate=0.0).eval()
    plain = build_pair('AnyPoolFormer', drop_path_rate=0.0).eval()
    block, twin = model.peft_stages()[1][1][0], plain.peft_stages()[1][1][0]
    x = torch.randn(2, 24, 6, 5)
    with torch.no_grad():
        out = block(x)
        expected = twin(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(block.parallel_adapter.seen, _tokens(x))
    torch.testing.assert_close(block.adapter.seen, _tokens(expected))
    torch.testing.assert_close(block.mixer_in_adapter.seen,
                               _tokens(twin.norm1(x)))
    mid = x + twin.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * \
        twin.token_mixer(twin.norm1(x))
    torch.testing.assert_close(block.mlp_out_adapter.seen,
                               _tokens(twin.mlp(twin.norm2(mid))))


def test_block_parallel_reads_the_downsample_shortcut(methods):
    """The first Bottleneck of a stage changes width and resolution; its
    parallel adapter reads the output of its downsample projection."""
    model = build_pair('AnyResNet', dict(type='GenericProbe',
                                         sites=['block_parallel'])).eval()
    first, second = model.peft_stages()[1][1][:2]
    x = torch.randn(2, 16, 8, 6)
    with torch.no_grad():
        out = first(x)
        second(out)
    torch.testing.assert_close(first.parallel_adapter.seen,
                               _tokens(first.downsample(x)))
    torch.testing.assert_close(second.parallel_adapter.seen, _tokens(out))
    no_shortcut = AnyBackbone(
        backbone=GENERIC_BACKBONES['AnyResNet'], shortcut='nope',
        peft=dict(type='AdaptFormer', hidden_dim=4))
    with pytest.raises(ValueError, match='give the hint shortcut='):
        no_shortcut(torch.randn(1, 3, 32, 32))


# -- what the hints do not give ----------------------------------------------
@pytest.mark.parametrize('host, peft, advice', [
    ('AnyResNet', dict(type='LoRA'),
     "add the hint layers=dict(<alias>='<fnmatch pattern of module names>'"
     ", ...) naming ['qkv'] or ['in_proj', 'out_proj'] or ['fc1', 'fc2']"),
    ('AnyResNet', dict(type='GenericProbe', sites=['mlp_in']),
     "for mlp_in, add the hint branches=dict(mlp='<name of the block "
     "submodule computing that branch>')"),
    ('AnyTIMMBackbone', dict(type='LoRand'),
     "for attn_out, add the hint branches=dict(attn='"),
    ('AnyTIMMBackbone', dict(type='LoRand', sites=['pre_dwconv']),
     'pre_dwconv needs code inside the block (write a host'),
    ('AnyPoolFormer', dict(type='VPT'), 'attn_tokens needs code inside'),
    ('AnyPoolFormer', dict(type='CoLoRA'),
     "the capability 'depthwise_pointwise_blocks' needs a hand-written host"),
])
def test_a_missing_site_or_alias_names_the_hint_to_add(host, peft, advice,
                                                      methods):
    with pytest.raises(ValueError) as info:
        build_pair(host, peft)
    message = str(info.value)
    assert message.startswith(f"{peft['type']} cannot adapt {host}: ")
    assert advice in message


# -- official checkpoints ----------------------------------------------------
@pytest.mark.parametrize('host', sorted(GENERIC_BACKBONES))
def test_official_layouts_load_strictly(host, tmp_path):
    backbone = GENERIC_BACKBONES[host]
    state = official_state_dict(backbone, seed=3)
    path = write_checkpoint(str(tmp_path / 'official.pth'), state)
    model = build_pair(host, dict(type='AdaptFormer', hidden_dim=4),
                       init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    own = model.state_dict()
    if host == 'AnyTIMMBackbone':  # stages.0.blocks -> stages_0.blocks
        assert torch.equal(own['timm_model.stages_1.blocks.0.mlp.fc1.weight'],
                           state['stages.1.blocks.0.mlp.fc1.weight'])
        assert torch.equal(own['timm_model.stem_0.weight'],
                           state['stem.0.weight'])
    else:
        for key, value in state.items():
            if key in own:
                assert torch.equal(own[key], value), key
    del state[next(k for k in state if k.endswith('.weight')
                   and 'fc' not in k and 'head' not in k)]
    path = write_checkpoint(str(tmp_path / 'short.pth'), state)
    model = build_pair(host, init_cfg=dict(type='Pretrained',
                                           checkpoint=path))
    with pytest.raises(Exception, match='missing'):
        model.init_weights()


# -- the configs ----------------------------------------------------------
def parax_count(widths, depths, rank, hidden=16, norms=False):
    """ParaX with kernels (3, 5, 7), one center per stage (M = depth) and
    one adapter per block: per adapter 27C + h(C + 1) + 5M(h + 1) + r^2 +
    4r + 7, per center M(2rC + 83r), 2C per trained output norm."""
    total = 0
    for c, m in zip(widths, depths):
        adapter = 27 * c + hidden * (c + 1) + 5 * m * (hidden + 1) \
            + rank**2 + 4 * rank + 7
        total += m * adapter + m * (2 * rank * c + 83 * rank)
        total += 2 * c if norms else 0
    return total


def adaptformer_count(widths, depths, d):
    """down [d, C] + d, up [C, d] + C per block."""
    return sum(m * (2 * c * d + d + c) for c, m in zip(widths, depths))


def lora_mlp_count(widths, depths, rank, ratio=4):
    """fc1 (C -> 4C) and fc2 (4C -> C): r(C + 4C) each."""
    return sum(m * 2 * rank * (c + ratio * c) for c, m in zip(widths, depths))


def lora_bottleneck_count(rank):
    """ResNet-50 conv1 (in -> p) and conv3 (p -> 4p) of every Bottleneck;
    in = 64 for the first block, 2p for the first of later stages, else
    4p."""
    total = 0
    for i, m in enumerate((3, 4, 6, 3)):
        p = 64 * 2**i
        for j in range(m):
            inputs = 4 * p if j else (64 if i == 0 else 2 * p)
            total += rank * (inputs + p) + rank * (p + 4 * p)
    return total


POOLFORMER = ([64, 128, 320, 512], [2, 2, 6, 2])
RESNET = ([256, 512, 1024, 2048], [3, 4, 6, 3])
CONVNEXTV2 = ([96, 192, 384, 768], [3, 3, 9, 3])
COUNTS = {
    f'parax_poolformer-s12{ADE}': parax_count(*POOLFORMER, 32, norms=True),
    f'lora_poolformer-s12{ADE}': lora_mlp_count(*POOLFORMER, 16),
    f'adaptformer_poolformer-s12{ADE}': adaptformer_count(*POOLFORMER, 32),
    f'parax_resnet-50{ADE}': parax_count(*RESNET, 64),
    f'lora_resnet-50{ADE}': lora_bottleneck_count(32),
    f'adaptformer_resnet-50{ADE}': adaptformer_count(*RESNET, 64),
    f'parax_convnextv2-t{ADE}': parax_count(*CONVNEXTV2, 64),
    f'lora_convnextv2-t{ADE}': lora_mlp_count(*CONVNEXTV2, 32),
    f'adaptformer_convnextv2-t{ADE}': adaptformer_count(*CONVNEXTV2, 64),
}


def test_the_configs_are_those_counted():
    names = sorted(osp.basename(p) for p in glob.glob(f'{CONFIGS}/*.py'))
    assert names == sorted(
        list(COUNTS) + [f'full_{b}{ADE}' for b in
                        ('poolformer-s12', 'resnet-50', 'convnextv2-t')])


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(COUNTS))
def test_exact_trainable_counts(name):
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    full = Config.fromfile(osp.join(CONFIGS, 'full_' + name.split('_', 1)[1]))
    backbone = cfg.model.backbone.copy()
    assert backbone.pop('peft') == cfg.peft
    assert backbone == full.model.backbone  # the sibling's, with a method
    init_default_scope(cfg.default_scope)
    assert cfg.model.backbone.type == 'mmparax.AnyBackbone'
    cfg.model.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    trainable = sum(p.numel() for p in backbone.parameters()
                    if p.requires_grad)
    assert trainable == COUNTS[name]


CUSTOM = osp.join(REPO, 'demo', 'custom_imports')
CUSTOM_CONFIG = osp.join(
    CUSTOM, f'ssf_poolformer-s12{ADE}')


def test_custom_imports_register_a_method_kept_outside(methods, monkeypatch):
    """The demo config imports my_peft (not in the package) through
    custom_imports; without its folder on the path the config fails,
    naming the module."""
    monkeypatch.delitem(sys.modules, 'my_peft', raising=False)
    with pytest.raises(ImportError, match='my_peft'):
        Config.fromfile(CUSTOM_CONFIG)
    monkeypatch.syspath_prepend(CUSTOM)
    cfg = Config.fromfile(CUSTOM_CONFIG)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    assert type(backbone.peft).__module__ == 'my_peft'
    widths, depths = POOLFORMER  # a scale and a shift after every block
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) \
        == sum(2 * c * m for c, m in zip(widths, depths))


SIZE = 64
FAMILIES = {
    'poolformer-s12': dict(type='mmpretrain.PoolFormer', arch='s12'),
    'resnet-50': dict(type='mmpretrain.ResNet', depth=50),
    'convnextv2-t': dict(type='mmpretrain.TIMMBackbone',
                         model_name='convnextv2_tiny'),
}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('generic_e2e')
    data_root = make_ade20k(
        str(root / 'ade'), num_train=2, num_val=1, img_size=(SIZE, SIZE),
        num_classes=150, seed=0)
    checkpoints = {
        family: write_checkpoint(str(root / f'{family}.pth'),
                                 official_state_dict(backbone),
                                 wrapper=None)
        for family, backbone in FAMILIES.items()
    }
    options = two_iteration_options(data_root, SIZE)
    return dict(options=options, checkpoints=checkpoints)


def _segmentation_batch(size, num_classes=150, batch=2):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, size, size)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(COUNTS))
def test_three_training_steps(name):
    """The config's whole model and optimizer (its PEFT constructor) take
    three steps on 64 x 64 images: the losses are finite, the method's
    parameters move and every pretrained weight stays."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.size = (SIZE, SIZE)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.train()
    optim = dict(cfg.optim_wrapper, type='OptimWrapper')  # fp32 on the CPU
    optim.pop('loss_scale', None)
    wrapper = build_optim_wrapper(model, optim)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    batch = _segmentation_batch(SIZE)
    for _ in range(3):
        losses = model.train_step(batch, wrapper)
        assert all(math.isfinite(v.item()) for v in losses.values())
    moved = {k for k, p in model.named_parameters()
             if not torch.equal(p, before[k])}
    method = {k for k in trainable if k.startswith('backbone.')}
    assert len(method & moved) > len(method) // 2
    assert moved <= trainable  # nothing frozen moved
    assert sum(before[k].numel() for k in method) == COUNTS[name]


# one method per family through tools/train.py
E2E = [f'lora_poolformer-s12{ADE}', f'adaptformer_resnet-50{ADE}',
       f'parax_convnextv2-t{ADE}']


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize('name', E2E)
def test_two_iterations_then_test(assets, name, tmp_path):
    family = name.split('_')[1]
    options = ['--cfg-options', *assets['options'],
               'model.backbone.init_cfg.checkpoint='
               f"{assets['checkpoints'][family]}"]
    work_dir = tmp_path / 'work_dir'
    proc = run_tool('train.py', osp.join(CONFIGS, name), '--work-dir',
                    work_dir, *options, cwd=tmp_path)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'Iter(train) [2/2]' in log
    state = torch.load(work_dir / 'iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    pretrained = torch.load(assets['checkpoints'][family], map_location='cpu')
    if family == 'convnextv2-t':  # timm's names in TIMMBackbone's
        pretrained = {'timm_model.' + re.sub(r'^(stem|stages)\.(\d+)\.',
                                             r'\1_\2.', k): v
                      for k, v in pretrained.items()}
    compared = [k for k in pretrained if 'backbone.' + k in state]
    assert len(compared) > len(pretrained) // 2
    # every pretrained tensor untouched, BatchNorm statistics included
    moved = [k for k in compared
             if not torch.equal(state['backbone.' + k], pretrained[k])]
    assert not moved, moved
    if family == 'convnextv2-t':
        return
    # the adapter-only checkpoint evaluates over the pretrained backbone
    proc = run_tool('test.py', osp.join(CONFIGS, name),
                    work_dir / 'iter_2_peft.safetensors', '--work-dir',
                    work_dir, *options, cwd=tmp_path)
    check_ok(proc)
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        assert math.isfinite(json.load(f)['mIoU'])
