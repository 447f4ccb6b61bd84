"""Strict pretrained loading of the Swin backbones from real key layouts.

Every checkpoint is written to disk from a random OpenMMLab-layout Swin
(every float tensor random, LayerNorms included) and loaded through
``init_cfg=dict(type='Pretrained', checkpoint=...)`` + ``init_weights()``;
loaded tensors are compared with that OpenMMLab-layout source.
"""
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones.swin import swin_converter
from mmengine.logging import MMLogger
from mmseg.models.backbones.swin import PatchMerging

from mmparax.models.backbones import ParaXSwin, Swin
from mmparax.testing import (
    swin_to_microsoft,
    tiny_swin_kwargs,
    tiny_swin_state_dict,
    write_checkpoint,
)

PARAX = dict(hidden_dim=8, router_hidden=4)
OUTPUT_NORM = re.compile(r'^norm\d+\.')


@pytest.fixture(scope='module')
def source():
    """OpenMMLab-layout tiny Swin weights, every float tensor random."""
    return tiny_swin_state_dict(seed=1, random_all=True)


def imagenet_part(state_dict):
    """What an ImageNet checkpoint holds: no per-output norms."""
    return {k: v for k, v in state_dict.items() if not OUTPUT_NORM.match(k)}


def build(path=None, cls=ParaXSwin, **overrides):
    kwargs = tiny_swin_kwargs(**overrides)
    if cls is ParaXSwin:
        kwargs['parax'] = PARAX
    init_cfg = dict(type='Pretrained', checkpoint=str(path)) if path else None
    torch.manual_seed(0)
    return cls(init_cfg=init_cfg, **kwargs)


def frozen_names(model):
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def assert_frozen_equal(model, source):
    """Every frozen parameter and every buffer equals the source exactly."""
    own = model.state_dict()
    frozen = frozen_names(model)
    expected = set(imagenet_part(source))
    buffers = {n for n, _ in model.named_buffers()}
    # the frozen set is exactly what an ImageNet checkpoint provides
    assert set(frozen) | buffers == expected
    for name in sorted(expected):
        assert torch.equal(own[name], source[name]), name


def write_microsoft(tmp_path, state_dict, name='swin_ms.pth', **kwargs):
    return write_checkpoint(
        str(tmp_path / name), swin_to_microsoft(state_dict, **kwargs))


# -- the converter itself ---------------------------------------------------
def test_swin_to_microsoft_is_the_inverse_of_mmdet_converter(source):
    ms = swin_to_microsoft(source)
    assert any(k.startswith('layers.') for k in ms)
    assert not any(k.startswith('stages.') for k in ms)
    for key in ('patch_embed.proj.weight', 'norm.weight', 'head.weight',
                'layers.0.blocks.0.attn.qkv.weight',
                'layers.0.blocks.0.mlp.fc1.weight',
                'layers.0.blocks.1.attn_mask'):
        assert key in ms, key
    assert ms['head.weight'].shape == (1000, 128)
    back = {
        k[len('backbone.'):]: v
        for k, v in swin_converter(ms).items()
        if not k.endswith('attn_mask') and k != 'backbone.norm.weight'
        and k != 'backbone.norm.bias'
    }
    expected = imagenet_part(source)
    assert set(back) == set(expected)
    for key, value in expected.items():
        assert torch.equal(back[key], value), key
    # the PatchMerging tensors really are reordered, not copied
    for part in ('reduction.weight', 'norm.weight'):
        assert not torch.equal(ms[f'layers.0.downsample.{part}'],
                               source[f'stages.0.downsample.{part}'])


def test_microsoft_patch_merging_order_matches_openmmlab(source):
    """Microsoft PatchMerging (x0..x3 concat) with the converted weights
    computes what OpenMMLab's unfold PatchMerging computes."""
    ms = swin_to_microsoft(source)
    merge = PatchMerging(16, 32)
    merge.load_state_dict({
        k[len('stages.0.downsample.'):]: v
        for k, v in source.items() if k.startswith('stages.0.downsample.')
    })
    x = torch.randn(2, 8 * 6, 16)
    expected, hw = merge(x, (8, 6))
    assert hw == (4, 3)

    grid = x.view(2, 8, 6, 16)
    x0, x1 = grid[:, 0::2, 0::2], grid[:, 1::2, 0::2]
    x2, x3 = grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]
    cat = torch.cat([x0, x1, x2, x3], -1).view(2, -1, 64)
    prefix = 'layers.0.downsample.'
    cat = F.layer_norm(cat, (64, ), ms[prefix + 'norm.weight'],
                       ms[prefix + 'norm.bias'])
    out = cat @ ms[prefix + 'reduction.weight'].t()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_written_checkpoints_load_with_weights_only(tmp_path, source):
    ms_path = write_microsoft(tmp_path, source)
    mm_path = write_checkpoint(
        str(tmp_path / 'mm.pth'), imagenet_part(source), wrapper='state_dict')
    ms = torch.load(ms_path, weights_only=True)
    mm = torch.load(mm_path, weights_only=True)
    assert set(ms) == {'model'}
    assert set(mm) == {'state_dict', 'meta'}


# -- loading the layouts ------------------------------------------------------
@pytest.mark.parametrize('cls', [ParaXSwin, Swin])
def test_microsoft_checkpoint_loads_exactly(tmp_path, source, cls):
    model = build(write_microsoft(tmp_path, source), cls=cls)
    model.init_weights()
    if cls is ParaXSwin:
        assert_frozen_equal(model, source)
    else:
        own = model.state_dict()
        for name, value in imagenet_part(source).items():
            assert torch.equal(own[name], value), name


def test_openmmlab_checkpoint_loads_exactly(tmp_path, source):
    path = write_checkpoint(
        str(tmp_path / 'swin_mm.pth'),
        imagenet_part(source),
        wrapper='state_dict')
    model = build(path)
    model.init_weights()
    assert_frozen_equal(model, source)


def test_segmentor_checkpoint_loads_backbone_only(tmp_path, source):
    state_dict = {f'backbone.{k}': v for k, v in source.items()}
    state_dict.update({
        'decode_head.conv_seg.weight': torch.randn(150, 64, 1, 1),
        'decode_head.conv_seg.bias': torch.randn(150),
        'auxiliary_head.conv_seg.weight': torch.randn(150, 32, 1, 1),
    })
    path = write_checkpoint(
        str(tmp_path / 'upernet.pth'),
        state_dict,
        wrapper='state_dict',
        extra={'meta': {'iter': 160000}})
    model = build(path)
    model.init_weights()
    assert_frozen_equal(model, source)
    # the trained output norms of a segmentor checkpoint come along
    own = model.state_dict()
    assert torch.equal(own['norm0.weight'], source['norm0.weight'])


# -- what must not load -----------------------------------------------------
def assert_refused(path, key, **overrides):
    model = build(path, **overrides)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=re.escape(key)):
        model.init_weights()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f'{name} changed on failure'


def test_missing_parameter_raises(tmp_path, source):
    ms = swin_to_microsoft(source)
    del ms['layers.1.blocks.0.attn.qkv.weight']
    path = write_checkpoint(str(tmp_path / 'missing.pth'), ms)
    assert_refused(path, 'stages.1.blocks.0.attn.w_msa.qkv.weight')


def test_wrong_shape_raises(tmp_path):
    other = tiny_swin_state_dict(seed=2, random_all=True, embed_dims=32)
    path = write_microsoft(tmp_path, other, name='dims32.pth')
    assert_refused(path, 'patch_embed.projection.weight')


@pytest.mark.parametrize('layout', ['microsoft', 'openmmlab'])
def test_unknown_key_raises(tmp_path, source, layout):
    if layout == 'microsoft':
        state_dict = swin_to_microsoft(source)
        state_dict['layers.0.blocks.0.mlp.fc3.weight'] = torch.zeros(4, 4)
        key = 'stages.0.blocks.0.ffn.fc3.weight'
    else:
        state_dict = dict(imagenet_part(source))
        state_dict['stages.2.blocks.1.attn.w_msa.lora_a'] = torch.zeros(4)
        key = 'stages.2.blocks.1.attn.w_msa.lora_a'
    path = write_checkpoint(str(tmp_path / f'stray_{layout}.pth'), state_dict)
    assert_refused(path, key)


# -- window size ----------------------------------------------------------
def test_window_size_change_interpolates_position_tables(tmp_path, source):
    """A window-7 checkpoint into a window-12 backbone (Swin 384 setting)."""
    model = build(write_microsoft(tmp_path, source), window_size=12)
    model.init_weights()
    own = model.state_dict()
    tables = [k for k in source if k.endswith('relative_position_bias_table')]
    assert tables
    for key in tables:
        heads = source[key].shape[1]
        grid = source[key].t().reshape(1, heads, 13, 13)
        expected = F.interpolate(grid, size=(23, 23), mode='bicubic')
        expected = expected.reshape(heads, 23 * 23).t()
        assert own[key].shape == (23 * 23, heads)
        torch.testing.assert_close(own[key], expected)
    for key, value in imagenet_part(source).items():
        if key.endswith(('relative_position_bias_table',
                         'relative_position_index')):
            continue
        assert torch.equal(own[key], value), key


# -- PEFT parameters --------------------------------------------------------
def test_peft_parameters_keep_init_and_stay_trainable(tmp_path):
    # pretraining-like weights: with N(0, 1) everywhere the routers saturate
    model = build(write_microsoft(tmp_path, tiny_swin_state_dict(seed=3)))
    trainable = model.peft_trainable_names()
    assert any('adapter1' in n for n in trainable)
    assert any('expert_centers' in n for n in trainable)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in trainable}
    model.init_weights()
    params = dict(model.named_parameters())
    for name in trainable:
        assert torch.equal(params[name], before[name]), name
        assert params[name].requires_grad, name
    trainable_now = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_now == set(trainable)
    # and they still learn: one backward reaches every adapter and center
    model.train()
    # (a plain sum of a LayerNorm output has no gradient: weight it)
    outs = model(torch.randn(1, 3, 64, 64))
    sum((out * torch.randn_like(out)).sum() for out in outs).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
        if name.endswith(('.down', '.up', 'router.2.weight')):
            assert param.grad.abs().sum() > 1e-8, name


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_no_checkpoint_warns_random(tmp_path):
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        build(None).init_weights()
        warnings = [
            r.getMessage() for r in handler.records
            if r.levelno >= logging.WARNING
        ]
        assert any('RANDOM' in m for m in warnings), warnings

        handler.records.clear()
        build(write_microsoft(tmp_path, tiny_swin_state_dict())).init_weights()
        assert not any('RANDOM' in r.getMessage() for r in handler.records)
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize('layout', ['microsoft', 'openmmlab'])
def test_safetensors_checkpoint_file_loads_exactly(tmp_path, source, layout):
    from safetensors.torch import save_file
    weights = swin_to_microsoft(source) if layout == 'microsoft' else \
        imagenet_part(source)
    path = tmp_path / 'swin.safetensors'
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    model = build(path)
    model.init_weights()
    assert_frozen_equal(model, source)
    # cut off: named as damaged
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(Exception, match='damaged') as info:
        build(path).init_weights()
    assert str(path) in str(info.value)
