"""Table 7: ViT-L/16 SETR-PUP on ADE20K (full fine-tuning, VPT, ParaX).

The configs parse, follow mmseg's SETR-PUP recipe, build (without weights)
with the expected backbone, heads and trainable counts, and a tiny version of
the ParaX config trains two iterations through tools/train.py from a random
checkpoint in the official timm layout and evaluates through tools/test.py.
"""
import glob
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from mmengine.config import Config

from mmparax.apis.peft_checkpoint import load_safetensors

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
TINY_CFG = ROOT / 'tests' / 'configs' / 'tiny_parax_vit_setr-pup_ade20k.py'
SETR = '_vit-l_setr-pup_8xb2-160k_ade20k-512x512.py'
FULL, VPT, PARAX = (f'{m}/{m}{SETR}' for m in ('full', 'vpt', 'parax'))
CHECKPOINT = 'pretrain/jx_vit_large_patch16_224_in21k-606da67d.pth'

HEADS = 13_143_640  # SETR-PUP decode head + three auxiliary heads
# config -> (trainable backbone, trainable model, paper # P (M), paper mIoU)
COUNTS = {
    FULL: (304_147_456, 317_291_096, 317.3, 47.6),
    VPT: (245_760, 13_389_400, 13.6, 44.1),
    PARAX: (8_058_216, 21_201_856, 14.7, 48.2),
}
# block groups: the host's default (blocks 1-10, 11-15, 16-20, 21-24) and
# ParaX's one center shared by every block, as the reference ViT (M = depth)
GROUPS = {FULL: (10, 5, 5, 4), VPT: (10, 5, 5, 4), PARAX: (24, )}


def _cfg(name):
    return Config.fromfile(CONFIGS / name)


def _build(cfg):
    """The config's model on the CPU, without pretrained weights."""
    import mmparax  # noqa: F401
    from mmparax.utils import build_config_model
    return build_config_model(cfg)


def _numel(params):
    return sum(p.numel() for p in params)


# -- recipe -------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_setr_recipe(name):
    cfg = _cfg(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'mmparax.ViT'
    assert (backbone.arch, backbone.img_size, backbone.patch_size) == \
        ('large', 512, 16)
    assert backbone.out_type == 'featmap'
    assert tuple(backbone.out_indices) == (9, 14, 19, 23)
    assert backbone.final_norm is False and backbone.with_cls_token
    assert backbone.interpolate_mode == 'bilinear'
    assert backbone.drop_rate == 0. and backbone.drop_path_rate == 0.
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=CHECKPOINT)
    assert cfg.checkpoint_file == CHECKPOINT

    # mmseg's ADE20K SETR-PUP heads
    head = cfg.model.decode_head
    assert (head.type, head.in_channels, head.channels, head.in_index,
            head.num_convs, head.up_scale, head.kernel_size,
            head.num_classes, head.dropout_ratio) == \
        ('SETRUPHead', 1024, 256, 3, 4, 2, 3, 150, 0)
    assert head.loss_decode.loss_weight == 1.0
    aux = cfg.model.auxiliary_head
    assert [h.in_index for h in aux] == [0, 1, 2]
    for h in aux:
        assert (h.type, h.in_channels, h.channels, h.num_convs, h.up_scale,
                h.kernel_size, h.num_classes, h.act_cfg.type) == \
            ('SETRUPHead', 1024, 256, 2, 4, 3, 150, 'ReLU')
        assert h.loss_decode.loss_weight == 0.4
    for h in [head, *aux]:
        assert h.norm_cfg.type == 'SyncBN'
    assert cfg.model.test_cfg == dict(
        mode='slide', crop_size=(512, 512), stride=(341, 341))

    # mmseg's SETR optimizer and schedule, 8 GPUs x 2 images, 160k
    optim = cfg.optim_wrapper
    assert optim.optimizer == dict(
        type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0)
    assert optim.paramwise_cfg == dict(custom_keys={'head': dict(lr_mult=10.)})
    assert optim.constructor == 'mmparax.PEFTOptimWrapperConstructor'
    if name == PARAX:  # fp16 adapters under a dynamic loss scale
        assert optim.type == 'AmpOptimWrapper'
        assert optim.loss_scale == 'dynamic'
    else:
        assert optim.type == 'OptimWrapper' and 'loss_scale' not in optim
    assert cfg.param_scheduler == [
        dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160001,
             by_epoch=False)
    ]
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    # mmseg's SETR test pipeline: no ResizeToMultiple
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert [t.type for t in loader.dataset.pipeline] == [
            'LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackSegInputs'
        ]
        assert loader.dataset.pipeline[1].scale == (2048, 512)
    assert cfg.data_preprocessor.size == (512, 512)


@pytest.mark.parametrize('name', [VPT, PARAX])
def test_peft_configs_are_the_full_recipe_with_a_method(name):
    cfg, full = _cfg(name), _cfg(FULL)
    assert set(cfg.keys()) == set(full.keys()) | {'custom_hooks', 'head_init',
                                                  'peft'}
    assert cfg.peft == cfg.model.backbone.peft
    hooks = [h.type for h in cfg.custom_hooks]
    assert hooks == ['mmparax.PEFTCheckHook', 'mmparax.PEFTCheckpointHook']
    backbone = cfg.model.backbone.copy()
    peft = backbone.pop('peft')
    if name == PARAX:  # one center for every block, as the reference ViT
        assert backbone.pop('block_groups') == [24]
    assert backbone == full.model.backbone
    assert {k: v for k, v in cfg.model.items() if k != 'backbone'} == \
        {k: v for k, v in full.model.items() if k != 'backbone'}
    if name == VPT:
        assert peft == dict(type='VPT', num_tokens=10)
        assert cfg.optim_wrapper == full.optim_wrapper
    else:
        assert peft == dict(type='ParaX', hidden_dim=128,
                            kernel_sizes=(3, 5, 7), router_hidden=16,
                            sites=['post_mlp'], force_fp16=True)
        optim = dict(cfg.optim_wrapper)
        assert (optim.pop('type'), optim.pop('loss_scale')) == \
            ('AmpOptimWrapper', 'dynamic')
        assert optim == {k: v for k, v in full.optim_wrapper.items()
                         if k != 'type'}
    for key in ('train_cfg', 'param_scheduler', 'train_dataloader',
                'val_dataloader', 'test_dataloader', 'default_hooks'):
        assert cfg[key] == full[key], key


def test_poly_schedule_equals_mmcv_poly():
    """lr(i) = (lr - 1e-4) * (1 - i / 160000)^0.9 + 1e-4 (mmcv 1.x's poly of
    the SETR and VPT runs) at every iteration, for the backbone (0.001) and
    the heads (x10)."""
    from mmengine.hooks import ParamSchedulerHook
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
    init_default_scope('mmseg')
    cfg = _cfg(FULL)
    base = cfg.optim_wrapper.optimizer.lr
    bases = (base, base * 10)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in bases]
    wrapper = OptimWrapper(
        torch.optim.SGD([dict(params=[p], lr=lr)
                         for p, lr in zip(params, bases)], lr=base))
    runner = SimpleNamespace(param_schedulers=[
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
        for s in cfg.param_scheduler
    ])
    hook, groups, worst = ParamSchedulerHook(), wrapper.param_groups, 0.0
    for i in range(cfg.train_cfg.max_iters):
        for group, lr in zip(groups, bases):
            ref = (lr - 1e-4) * (1 - i / 160000)**0.9 + 1e-4
            worst = max(worst, abs(group['lr'] - ref) / ref)
        hook.after_train_iter(runner, i)
    assert worst < 1e-9


# -- models and counts --------------------------------------------------------


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_model_counts(name):
    from mmparax.engine import PEFTOptimWrapperConstructor
    from mmparax.models import ViT
    backbone_count, model_count, paper, _ = COUNTS[name]
    cfg = _cfg(name)
    model = _build(cfg)
    backbone = model.backbone
    assert isinstance(backbone, ViT)
    assert (backbone.embed_dims, backbone.num_layers) == (1024, 24)
    assert backbone.patch_resolution == (32, 32)
    assert backbone.block_groups == GROUPS[name]
    assert not hasattr(backbone, 'ln1')  # final_norm=False, as mmseg's SETR

    named = dict(backbone.named_parameters())
    trainable = _numel(p for p in named.values() if p.requires_grad)
    heads = _numel(p for n, p in model.named_parameters()
                   if not n.startswith('backbone.'))
    assert trainable == backbone_count
    assert heads == HEADS
    assert _numel(p for p in model.parameters() if p.requires_grad) == \
        model_count == backbone_count + HEADS
    # the paper's # P of Table 7 counts the heads: full fine-tuning prints
    # it exactly, the PEFT rows do not (see the READMEs)
    assert (f'{model_count / 1e6:.1f}' == f'{paper:.1f}') == (name == FULL)

    components = backbone.peft_components()
    pretrained = components['pretrained']
    assert _numel(named[n] for n in pretrained) == 304_147_456
    if name == FULL:
        assert trainable == _numel(named.values())
    else:
        assert not any(named[n].requires_grad for n in pretrained)
    if name == VPT:
        prompts = [p for n, p in named.items() if p.requires_grad]
        assert [tuple(p.shape) for p in prompts] == [(10, 1024)] * 24
    if name == PARAX:
        centers = backbone.expert_centers
        assert [[c.num_experts for c in g] for g in centers] == \
            [[m] for m in GROUPS[name]]
        for j, layer in enumerate(backbone.layers):  # one per block
            assert not backbone.has_site(layer, 'post_attn'), j
            assert backbone.has_site(layer, 'post_mlp'), j
        # the spec's closed form (C = 1024, hidden_dim 128, router 16, G = 5)
        adapter = 27 * 1024 + 16 * 1025 + 128**2 + 4 * 128 + 7
        closed = sum(m * (adapter + 5 * m * 17) +
                     m * (2 * 128 * 1024 + 83 * 128) for m in GROUPS[name])
        assert closed == backbone_count

    # the optimizer: frozen parameters left out, the heads at 10x
    wrapper = dict(cfg.optim_wrapper, type='OptimWrapper')
    wrapper.pop('loss_scale', None)
    constructor = PEFTOptimWrapperConstructor(
        {k: v for k, v in wrapper.items() if k not in ('constructor',
                                                       'paramwise_cfg')},
        wrapper['paramwise_cfg'])
    optimizer = constructor(model).optimizer
    lrs = {id(p): g['lr'] for g in optimizer.param_groups for p in g['params']}
    assert _numel(p for g in optimizer.param_groups
                  for p in g['params']) == model_count
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert lrs[id(p)] == (0.01 if 'head' in n else 0.001), n
        else:
            assert id(p) not in lrs, n


@pytest.mark.e2e
def test_count_params_tool_counts_backbone_and_model():
    tool = ROOT / 'tools' / 'analysis' / 'count_params.py'
    out = subprocess.run(
        [sys.executable, str(tool), str(CONFIGS / PARAX), '--json',
         '--paper'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    backbone_count, model_count, paper, _ = COUNTS[PARAX]
    assert result['trainable_backbone'] == backbone_count
    assert result['trainable_total'] == model_count
    assert result['components']['adapters']['trainable'] == 1_511_784
    assert result['components']['expert_centers']['trainable'] == 6_546_432
    assert result['paper_trainable_backbone_m'] == paper


def test_metafiles_and_readmes():
    for name, (_, _, paper, miou) in COUNTS.items():
        folder = CONFIGS / name.split('/')[0]
        meta = yaml.safe_load((folder / 'metafile.yml').read_text())
        (model, ) = [m for m in meta['Models']
                     if m['Config'] == f'configs/{name}']
        assert model['Name'] == Path(name).stem
        assert model['Metadata']['Paper Table'] == '7'
        assert model['Metadata']['Architecture'] == ['ViT-L', 'SETR-PUP']
        assert model['Metadata']['Trainable Parameters'] == f'{paper}M'
        (result, ) = model['Results']
        assert (result['Task'], result['Dataset']) == \
            ('Semantic Segmentation', 'ADE20K')
        assert result['Metrics'] == dict(mIoU=miou)
        assert Path(name).name in (folder / 'README.md').read_text()


# -- end to end ---------------------------------------------------------------


@pytest.mark.e2e
def test_tiny_setr_trains_and_tests(tmp_path):
    """The ParaX recipe with a tiny ViT (tests/configs): two iterations
    through tools/train.py from a random timm-layout checkpoint (position
    embeddings of a 3x3 grid resized to 4x4, ImageNet head and pre-logits
    dropped), then tools/test.py gives a finite mIoU."""
    from mmparax.testing import (
        check_ok,
        make_ade20k,
        run_tool,
        write_checkpoint,
    )
    from mmparax.testing.vit import tiny_vit_state_dict, vit_to_timm
    cfg = Config.fromfile(TINY_CFG)
    arch = cfg.model.backbone.arch
    data_root = make_ade20k(
        str(tmp_path / 'ade'), num_train=2, num_val=1, img_size=(64, 64),
        num_classes=150, seed=0)
    pretrained = tiny_vit_state_dict(
        seed=0, arch=arch, img_size=48, patch_size=16,
        out_indices=[1, 2, 4, 5], drop_path_rate=0.)
    checkpoint = write_checkpoint(
        str(tmp_path / 'jx_vit_tiny_patch16_in21k.pth'),
        vit_to_timm(pretrained, num_classes=21843, pre_logits=True))
    options = [
        '--cfg-options', 'optim_wrapper.type=OptimWrapper',  # CPU, fp32
        f'model.backbone.init_cfg.checkpoint={checkpoint}'
    ] + [
        f'{split}_dataloader.dataset.data_root={data_root}'
        for split in ('train', 'val', 'test')
    ]
    work_dir = tmp_path / 'work'
    proc = run_tool('train.py', TINY_CFG, '--work-dir', work_dir, *options,
                    cwd=tmp_path)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'converting a timm' in log
    assert 'resizing pos_embed from a 3x3 to a 4x4' in log
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'Iter(train) [2/2]' in log

    state = torch.load(work_dir / 'iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    # every pretrained tensor but the resized position table is untouched
    frozen = {k: v for k, v in pretrained.items()
              if k != 'pos_embed' and not k.startswith('ln1.')}
    for key, value in frozen.items():
        assert torch.equal(state['backbone.' + key], value), key
    assert state['backbone.pos_embed'].shape == (1, 17, arch.embed_dims)
    groups = {int(m.group(1)) for k in state
              for m in [re.match(r'backbone\.expert_centers\.(\d+)\.', k)]
              if m}
    assert groups == {0, 1, 2, 3}  # blocks (1-2, 3, 4-5, 6)
    peft = load_safetensors(
        str(work_dir / 'iter_2_peft.safetensors'))['state_dict']
    assert any('adapter' in k for k in peft)
    assert not set(peft) & {'backbone.' + k for k in frozen}

    proc = run_tool('test.py', TINY_CFG, work_dir / 'iter_2.pth',
                    '--work-dir', work_dir, *options, cwd=tmp_path)
    check_ok(proc)
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        miou = json.load(f)['mIoU']
    assert math.isfinite(miou) and 0.0 <= miou <= 100.0
