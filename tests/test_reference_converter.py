"""Checkpoints of the ParaX reference code convert to mmparax exactly.

Each test builds one of our tiny ParaX models with random weights, writes
its tensors in the reference's key layout (:mod:`mmparax.testing.reference`),
converts them back (function and command line), loads the result strictly
into a fresh model and compares the forward outputs bit for bit.
"""
from pathlib import Path

import pytest
import torch

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs
from mmparax.testing.checkpoints import write_checkpoint
from mmparax.testing.reference import mmparax_to_reference
from mmparax.testing.tools import run_tool
from mmparax.utils.reference_converter import (
    convert_reference_state_dict,
    detect_reference_backbone,
    reference_checkpoint_to_mmparax,
)

ROOT = Path(__file__).resolve().parents[1]
TOOL = 'model_converters/parax_reference_to_mmparax.py'
TINY_PARAX = dict(type='ParaX', hidden_dim=8, router_hidden=4)


def build(backbone, kernel_sizes=(3, 5, 7), hidden_dim=8):
    peft = dict(TINY_PARAX, hidden_dim=hidden_dim, kernel_sizes=kernel_sizes)
    if backbone == 'swin':
        return Swin(peft=peft, **tiny_swin_kwargs())
    if backbone == 'convnext':
        return ConvNeXt(peft=peft, **tiny_convnext_kwargs())
    return VMamba(
        peft=peft, arch=dict(dims=16, depths=(1, 1, 2, 1), ssm_ratio=2.0))


@torch.no_grad()
def randomized(model, seed=1):
    """Every parameter from N(0, 0.1^2): any mix-up changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


@torch.no_grad()
def outputs(model, size=56):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    return model.eval()(x)


def assert_same_outputs(model, state_dict):
    fresh = build_like(model)
    fresh.load_state_dict(state_dict, strict=True)
    expected, got = outputs(model), outputs(fresh)
    assert len(expected) == len(got) == 4
    for a, b in zip(expected, got):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


def build_like(model):
    backbone = {Swin: 'swin', ConvNeXt: 'convnext', VMamba: 'vmamba'}
    return build(backbone[type(model)], model.peft.kernel_sizes)


def convert_with_cli(src, dst, *args):
    proc = run_tool(TOOL, src, dst, *args, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, torch.load(dst, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('kernel_sizes', [(3, 5, 7), (3, )],
                         ids=['3-5-7', 'single-kernel'])
@pytest.mark.parametrize('backbone', ['swin', 'convnext', 'vmamba'])
def test_function_round_trip(backbone, kernel_sizes, capsys):
    model = randomized(build(backbone, kernel_sizes))
    ref = mmparax_to_reference(
        model.state_dict(), backbone, classifier=True,
        attn_mask=backbone == 'swin')
    # the written file really is in the reference layout
    assert any(k.startswith('peft_params.0.projA_params') for k in ref)
    assert any(k.endswith('adapter.logit_scale')
               or k.endswith('adapter1.logit_scale') for k in ref)
    assert not any(k.startswith('expert_centers.') for k in ref)
    assert detect_reference_backbone(ref) == backbone

    converted = convert_reference_state_dict(ref, logger=None)
    assert_same_outputs(model, converted)
    log = capsys.readouterr().out
    assert 'logit_scale' in log and 'ImageNet classifier' in log
    single = 'unused Linear(hidden_dim, 1)' in log
    assert single == (len(kernel_sizes) == 1)
    if single:  # the reference's unused attn.0 is in the file, not in ours
        assert any(k.endswith('.attn.0.weight') for k in ref)
        assert not any('scale_attn' in k for k in converted)


@pytest.mark.e2e
@pytest.mark.parametrize('backbone', ['swin', 'convnext', 'vmamba'])
def test_cli_round_trip(backbone, tmp_path):
    model = randomized(build(backbone, (3, )))
    src = write_checkpoint(
        str(tmp_path / 'ref.pth'),
        mmparax_to_reference(model.state_dict(), backbone),
        wrapper='model')
    proc, ckpt = convert_with_cli(src, tmp_path / 'out' / 'converted.pth')
    assert set(ckpt) == {'state_dict', 'meta'}
    meta = ckpt['meta']
    assert meta['backbone'] == backbone
    assert meta['converted_from'] == src
    assert meta['mmparax_converter'].startswith('parax_reference_to_mmparax')
    assert 'attn.0' in proc.stdout + proc.stderr  # the drop is logged
    assert_same_outputs(model, ckpt['state_dict'])


class TrainingCodeObject:
    """Stands for an object of the training code pickled into a file."""


def tiny_segmentor_cfg(hidden_dim=8):
    """Our Swin-B UperNet config with a tiny backbone and heads."""
    from mmengine.config import Config
    cfg = Config.fromfile(
        str(ROOT / 'configs/parax/'
            'parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py'))
    backbone = cfg.model.backbone
    backbone.pop('init_cfg')
    backbone.update(
        embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
        peft=dict(TINY_PARAX, hidden_dim=hidden_dim))
    bn = dict(type='BN', requires_grad=True)
    cfg.model.decode_head.update(
        in_channels=[16, 32, 64, 128], channels=16, norm_cfg=bn)
    cfg.model.auxiliary_head.update(in_channels=64, channels=8, norm_cfg=bn)
    return cfg


def build_segmentor(cfg):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.mark.e2e
def test_whole_segmentor_cli(tmp_path):
    cfg = tiny_segmentor_cfg()
    model = randomized(build_segmentor(cfg))
    ours = model.state_dict()
    ref = mmparax_to_reference(ours, 'swin', attn_mask=True)
    heads = [k for k in ours if not k.startswith('backbone.')]
    assert any(k.startswith('auxiliary_head.') for k in heads)
    # an mmseg 0.x checkpoint: meta with classes, optimizer state and an
    # object of a class the converter must not import
    classes = [f'class{i}' for i in range(150)]
    src = write_checkpoint(
        str(tmp_path / 'iter_160000.pth'), ref, wrapper='state_dict',
        extra=dict(
            meta=dict(CLASSES=tuple(classes), PALETTE=[[1, 2, 3]] * 150,
                      mmseg_version='0.20.2', env=TrainingCodeObject()),
            optimizer=dict(state={}, param_groups=[dict(lr=6e-5)])))
    with pytest.raises(Exception):
        torch.load(src, weights_only=True)
    _, ckpt = convert_with_cli(src, tmp_path / 'converted.pth')
    state_dict = ckpt['state_dict']
    assert ckpt['meta']['dataset_meta']['classes'] == classes
    # the heads are kept as they are (no renames from mmseg 0.x to 1.x)
    for key in heads:
        assert torch.equal(state_dict[key], ours[key]), key

    fresh = build_segmentor(cfg).eval()
    fresh.load_state_dict(state_dict, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model._forward(x), fresh._forward(x)
    assert torch.isfinite(expected).all()
    assert torch.equal(expected, got)


def test_whole_segmentor_function():
    cfg = tiny_segmentor_cfg()
    model = randomized(build_segmentor(cfg))
    ref = mmparax_to_reference(model.state_dict(), 'swin')
    converted = reference_checkpoint_to_mmparax(
        {'state_dict': ref}, source='x.pth', logger='silent')
    assert converted['meta']['backbone'] == 'swin'
    build_segmentor(cfg).load_state_dict(converted['state_dict'], strict=True)


@pytest.mark.e2e
def test_unknown_keys_raise_naming_them(tmp_path):
    ref = mmparax_to_reference(randomized(build('swin')).state_dict(), 'swin')
    ref['layers.0.blocks.0.adapter1.gate.weight'] = torch.zeros(2)
    ref['peft_params.1.projC_params'] = torch.zeros(2)
    ref['layers.0.blocks.0.extra_conv.weight'] = torch.zeros(2)
    with pytest.raises(ValueError) as error:
        convert_reference_state_dict(ref, logger='silent')
    for key in ('layers.0.blocks.0.adapter1.gate.weight',
                'peft_params.1.projC_params',
                'layers.0.blocks.0.extra_conv.weight'):
        assert key in str(error.value)

    # a whole model: a top-level module that is not a known head
    whole = {'backbone.' + k: v for k, v in ref.items()
             if k != 'layers.0.blocks.0.extra_conv.weight'
             and 'gate' not in k and 'projC' not in k}
    whole['decode_head.conv_seg.weight'] = torch.zeros(2)
    whole['teacher.conv.weight'] = torch.zeros(2)
    with pytest.raises(ValueError, match=r'teacher\.conv\.weight'):
        convert_reference_state_dict(whole, logger='silent')
    kept = convert_reference_state_dict(
        whole, extra_prefixes=['teacher'], logger='silent')
    assert 'teacher.conv.weight' in kept

    # the command line fails too, naming the key, and writes nothing
    src = write_checkpoint(str(tmp_path / 'bad.pth'), ref)
    proc = run_tool(TOOL, src, tmp_path / 'out.pth', cwd=ROOT)
    assert proc.returncode != 0
    assert 'layers.0.blocks.0.extra_conv.weight' in proc.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_other_rank_fails_strict_loading():
    ref = mmparax_to_reference(
        randomized(build('convnext', hidden_dim=8)).state_dict(), 'convnext')
    converted = convert_reference_state_dict(ref, logger='silent')
    with pytest.raises(RuntimeError, match=r'expert_centers\.0\.0\.down'):
        build('convnext', hidden_dim=4).load_state_dict(converted, strict=True)


def test_nonzero_logit_scale_raises():
    ref = mmparax_to_reference(
        randomized(build('vmamba')).state_dict(), 'vmamba')
    key = 'layers.1.blocks.0.adapter2.logit_scale'
    ref[key] = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=key):
        convert_reference_state_dict(ref, logger='silent')


def test_backbone_detection():
    swin = mmparax_to_reference(randomized(build('swin')).state_dict(),
                                'swin')
    vmamba = mmparax_to_reference(
        randomized(build('vmamba')).state_dict(), 'vmamba')
    with pytest.raises(ValueError, match='more than one backbone'):
        detect_reference_backbone({**swin, **vmamba})
    with pytest.raises(ValueError, match='already'):
        detect_reference_backbone(build('swin').state_dict())
    with pytest.raises(ValueError, match='backbone='):
        convert_reference_state_dict(swin, backbone='vit')
    # the family given explicitly: keys of another family are unknown
    with pytest.raises(ValueError, match='not part of a reference ParaX'):
        convert_reference_state_dict(swin, backbone='convnext',
                                     logger='silent')
