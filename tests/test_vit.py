"""ViT as a PEFT host: official key layouts loaded strictly, mmpretrain's
VisionTransformer computed exactly when switched off, sites on the patch
tokens only, VPT's prepended prompts, block groups and counts."""
import math
import re

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from mmparax.models.backbones.vit import ViT, timm_to_mmpretrain
from mmparax.peft import PEFTMethod, PEFTModule
from mmparax.peft.vpt import Prompts
from mmparax.registry import PEFT_METHODS
from mmparax.testing import switch_off, write_checkpoint
from mmparax.testing.vit import (
    tiny_vit_kwargs,
    tiny_vit_state_dict,
    vit_to_mae,
    vit_to_timm,
)

# -- official layouts ------------------------------------------------------
# A ViT of width 16, 2 blocks of 2 heads, MLP 64, patch 4 at 16 x 16 (a 4 x 4
# patch grid), written the way the releases store it: the timm / Google
# files (``jx_vit_large_p16_224-4ee7a4dc.pth``, ``vit_large_patch16_224.
# augreg_in21k``; IN-21K head of 21843 classes) and the MAE release
# (``mae_pretrain_vit_base.pth``: the same without the head, under 'model').
TINY = dict(
    arch=dict(embed_dims=16, num_layers=2, num_heads=2,
              feedforward_channels=64),
    img_size=16,
    patch_size=4,
    out_type='cls_token',
    out_indices=-1)
TIMM_BACKBONE = """
cls_token                  1 1 16
pos_embed                  1 17 16
patch_embed.proj.weight    16 3 4 4
patch_embed.proj.bias      16
blocks.0.norm1.weight      16
blocks.0.norm1.bias        16
blocks.0.attn.qkv.weight   48 16
blocks.0.attn.qkv.bias     48
blocks.0.attn.proj.weight  16 16
blocks.0.attn.proj.bias    16
blocks.0.norm2.weight      16
blocks.0.norm2.bias        16
blocks.0.mlp.fc1.weight    64 16
blocks.0.mlp.fc1.bias      64
blocks.0.mlp.fc2.weight    16 64
blocks.0.mlp.fc2.bias      16
blocks.1.norm1.weight      16
blocks.1.norm1.bias        16
blocks.1.attn.qkv.weight   48 16
blocks.1.attn.qkv.bias     48
blocks.1.attn.proj.weight  16 16
blocks.1.attn.proj.bias    16
blocks.1.norm2.weight      16
blocks.1.norm2.bias        16
blocks.1.mlp.fc1.weight    64 16
blocks.1.mlp.fc1.bias      64
blocks.1.mlp.fc2.weight    16 64
blocks.1.mlp.fc2.bias      16
norm.weight                16
norm.bias                  16
"""
TIMM_HEAD = """
head.weight                21843 16
head.bias                  21843
"""
# the first IN-21K release also has a representation layer
PRE_LOGITS = """
pre_logits.fc.weight       16 16
pre_logits.fc.bias         16
"""
# timm / Google name -> mmpretrain name, written out
RENAMES = [('patch_embed.proj.', 'patch_embed.projection.'),
           ('.norm1.', '.ln1.'), ('.norm2.', '.ln2.'),
           ('.mlp.fc1.', '.ffn.layers.0.0.'), ('.mlp.fc2.', '.ffn.layers.1.'),
           ('blocks.', 'layers.'), ('norm.', 'ln1.')]


def layout(*tables):
    out = {}
    for table in tables:
        for line in table.strip().splitlines():
            key, *shape = line.split()
            out[key] = tuple(int(s) for s in shape)
    return out


def random_checkpoint(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def mmpretrain_name(key):
    for old, new in RENAMES:
        if key.startswith(old) or (old.startswith('.') and old in key):
            key = key.replace(old, new, 1)
    return key


def build(peft=None, **overrides):
    torch.manual_seed(0)
    return ViT(peft=peft, **dict(TINY, **overrides))


def load(model, path):
    model.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    return model


@pytest.mark.parametrize('release, wrapper', [
    ((TIMM_BACKBONE, TIMM_HEAD), None),
    ((TIMM_BACKBONE, PRE_LOGITS, TIMM_HEAD), None),
    ((TIMM_BACKBONE, ), 'model'),  # MAE
])
def test_official_layouts_load_strictly(tmp_path, release, wrapper):
    ckpt = random_checkpoint(layout(*release))
    path = write_checkpoint(tmp_path / 'vit.pth', ckpt, wrapper=wrapper)
    model = load(build(dict(type='ParaX', hidden_dim=8, router_hidden=4)),
                 path)
    own = dict(model.named_parameters())
    loaded = set()
    for key, value in ckpt.items():
        if key.startswith(('head.', 'pre_logits.')):
            continue
        name = mmpretrain_name(key)
        torch.testing.assert_close(own[name], value, rtol=0, atol=0)
        assert not own[name].requires_grad
        loaded.add(name)
    assert loaded == set(model.pretrained_state_keys())


def test_writers_give_the_official_layouts():
    sd = tiny_vit_state_dict(**TINY)
    shapes = {k: tuple(v.shape) for k, v in vit_to_timm(sd).items()}
    assert shapes == layout(TIMM_BACKBONE, TIMM_HEAD)
    assert list(shapes) == list(layout(TIMM_BACKBONE, TIMM_HEAD))
    shapes = {k: tuple(v.shape) for k, v in vit_to_timm(
        sd, pre_logits=True).items()}
    assert shapes == layout(TIMM_BACKBONE, PRE_LOGITS, TIMM_HEAD)
    shapes = {k: tuple(v.shape) for k, v in vit_to_mae(sd).items()}
    assert shapes == layout(TIMM_BACKBONE)
    back = timm_to_mmpretrain(vit_to_timm(sd))
    for key, value in sd.items():
        assert torch.equal(back[key], value), key
    assert set(back) - set(sd) == {'head.weight', 'head.bias'}


@pytest.mark.parametrize('prefix, extra', [
    ('', {}),
    ('backbone.', {'head.layers.head.weight': torch.zeros(10, 16)}),
])
def test_openmmlab_layout_loads(tmp_path, prefix, extra):
    sd = tiny_vit_state_dict(**TINY, random_all=True)
    ckpt = dict({prefix + k: v for k, v in sd.items()}, **extra)
    path = write_checkpoint(tmp_path / 'vit.pth', ckpt, wrapper='state_dict')
    model = load(build(), path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_a_renamed_key_and_a_wrong_shape_raise_naming_them(tmp_path):
    ckpt = random_checkpoint(layout(TIMM_BACKBONE, TIMM_HEAD))
    ckpt['blocks.1.mlp.fc_1.weight'] = ckpt.pop('blocks.1.mlp.fc1.weight')
    path = write_checkpoint(tmp_path / 'renamed.pth', ckpt, wrapper=None)
    with pytest.raises(RuntimeError) as info:
        load(build(), path)
    message = str(info.value)
    assert 'renamed.pth' in message
    assert 'layers.1.ffn.layers.0.0.weight' in message  # missing
    assert 'blocks.1.mlp.fc_1.weight' in message  # unexpected

    ckpt = random_checkpoint(layout(TIMM_BACKBONE))
    ckpt['blocks.0.attn.qkv.weight'] = torch.zeros(45, 16)
    path = write_checkpoint(tmp_path / 'shape.pth', ckpt, wrapper='model')
    wrong = 'layers.0.attn.qkv.weight: checkpoint (45, 16) vs model (48, 16)'
    with pytest.raises(RuntimeError, match=re.escape(wrong)):
        load(build(), path)


@pytest.mark.parametrize('mode', ['bicubic', 'bilinear'])
def test_position_embeddings_are_resized_to_the_image_size(tmp_path, mode):
    ckpt = random_checkpoint(layout(TIMM_BACKBONE, TIMM_HEAD))
    path = write_checkpoint(tmp_path / 'vit.pth', ckpt, wrapper=None)
    model = load(build(img_size=24, interpolate_mode=mode), path)
    assert model.pos_embed.shape == (1, 1 + 36, 16)
    expected = resize_pos_embed(ckpt['pos_embed'], (4, 4), (6, 6), mode, 1)
    torch.testing.assert_close(model.pos_embed.data, expected, rtol=0, atol=0)
    torch.testing.assert_close(model.pos_embed.data[:, 0],
                               ckpt['pos_embed'][:, 0], rtol=0, atol=0)


def test_no_class_token_and_no_final_norm_drop_theirs(tmp_path):
    ckpt = random_checkpoint(layout(TIMM_BACKBONE, TIMM_HEAD))
    path = write_checkpoint(tmp_path / 'vit.pth', ckpt, wrapper=None)
    model = load(
        build(with_cls_token=False, final_norm=False, out_type='featmap',
              img_size=32), path)
    assert model.cls_token is None and not hasattr(model, 'ln1')
    expected = resize_pos_embed(ckpt['pos_embed'][:, 1:], (4, 4), (8, 8),
                                'bicubic', 0)
    torch.testing.assert_close(model.pos_embed.data, expected, rtol=0, atol=0)


def test_position_tables_that_do_not_fit_raise(tmp_path):
    ckpt = random_checkpoint(layout(TIMM_BACKBONE))
    ckpt['pos_embed'] = torch.zeros(1, 1 + 15, 16)
    path = write_checkpoint(tmp_path / 'odd.pth', ckpt, wrapper='model')
    with pytest.raises(ValueError, match=r'odd.pth.*pos_embed.*\(1, 16, 16\).*'
                       '15 patch positions are not a square grid'):
        load(build(), path)
    sd = tiny_vit_state_dict(**dict(TINY, with_cls_token=False,
                                    out_type='featmap'))
    path = write_checkpoint(tmp_path / 'nocls.pth', sd, wrapper='state_dict')
    with pytest.raises(ValueError, match='no class-token position'):
        load(build(img_size=32), path)


# -- switched off: mmpretrain's VisionTransformer --------------------------
ALL_SITES = ['pre_attn', 'attn_in', 'attn_out', 'post_attn', 'pre_mlp',
             'mlp_in', 'mlp_out', 'mlp_parallel', 'post_mlp']


@pytest.mark.parametrize('overrides', [
    dict(out_type='cls_token', out_indices=-1),
    dict(out_type='featmap', out_indices=[0, 2, 3], final_norm=False),
    dict(out_type='featmap', out_indices=[1, 3], with_cls_token=False),
    dict(out_type='avg_featmap', out_indices=[3]),
    dict(out_type='raw', out_indices=[1, 3]),
    dict(out_type='cls_token', pre_norm=True, layer_scale_init_value=0.1),
])
@pytest.mark.parametrize('peft', [
    None, dict(type='Mona', hidden_dim=8, dropout=0., sites=ALL_SITES)
])
def test_switched_off_equals_mmpretrain(overrides, peft):
    kwargs = tiny_vit_kwargs(**overrides)
    torch.manual_seed(0)
    model = ViT(peft=peft, **kwargs)
    reference = VisionTransformer(**tiny_vit_kwargs(**overrides))
    with torch.no_grad():
        for p in model.parameters():  # LayerNorms, scales: not 1 / 0
            p.normal_(std=0.3)
    missing, unexpected = reference.load_state_dict(
        model.state_dict(), strict=False)
    assert not missing and all('adapter' in k for k in unexpected)
    switch_off(model).eval()
    reference.eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        outs, expected = model(x), reference(x)
    assert len(outs) == len(expected) > 0
    for a, b in zip(outs, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- sites act on the patch tokens only ------------------------------------
class Double(PEFTModule):
    """Records its input and returns 2x it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x, hw_shape):
        self.seen, self.hw_shape = x, hw_shape
        return 2 * x * self.weight


@PEFT_METHODS.register_module(force=True)
class ViTSiteProbe(PEFTMethod):
    """A :class:`Double` at each requested site of every block."""

    def attach(self, host):
        self.add_site_modules(host, lambda *_: Double())


def patches_doubled(t):
    return torch.cat((t[:, :1], 2 * t[:, 1:]), dim=1)


def expected_block(block, x, site):
    """The block with a :class:`Double` at ``site`` acting on the patch
    tokens (for ``mlp_parallel``: 2x the patch tokens added)."""
    P = patches_doubled
    h = P(x) if site == 'pre_attn' else x
    h = block.ln1(h)
    h = block.attn(P(h) if site == 'attn_in' else h)
    s1 = x + (P(h) if site == 'attn_out' else h)
    s1 = P(s1) if site == 'post_attn' else s1
    h = P(s1) if site == 'pre_mlp' else s1
    h = block.ln2(h)
    h = block.ffn(P(h) if site == 'mlp_in' else h, identity=0)
    out = s1 + (P(h) if site == 'mlp_out' else h)
    if site == 'mlp_parallel':
        out = out + torch.cat((0 * s1[:, :1], 2 * s1[:, 1:]), dim=1)
    return P(out) if site == 'post_mlp' else out


@pytest.mark.parametrize('site', ALL_SITES)
def test_sites_see_the_patch_tokens_only(site):
    model = ViT(peft=dict(type='ViTSiteProbe', sites=[site]),
                **tiny_vit_kwargs()).eval()
    block = model.layers[2]
    x = torch.randn(2, 1 + 5 * 7, 32)
    with torch.no_grad():
        out = model.forward_block(block, x, (5, 7))
        expected = expected_block(block, x, site)
    torch.testing.assert_close(out, expected)
    probe = block._modules[model.block_sites[site]]
    assert probe.seen.shape == (2, 35, 32) and probe.hw_shape == (5, 7)


def test_the_class_token_bypasses_the_site_modules():
    """A module after the last block changes every patch token and leaves
    the class token as the plain ViT computes it."""
    kwargs = tiny_vit_kwargs(out_type='raw', out_indices=[3],
                             final_norm=False)
    plain = ViT(**kwargs).eval()
    model = ViT(peft=dict(type='ViTSiteProbe', sites=['post_mlp']),
                **kwargs).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    for block in model.layers[:3]:
        del block._modules['adapter2']
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        (got, ), (want, ) = model(x), plain(x)
    torch.testing.assert_close(got[:, 0], want[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(got[:, 1:], 2 * want[:, 1:], rtol=0, atol=0)


# -- VPT: prompts prepended after the class token ---------------------------
def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def literal_prompted_block(block, x, prompts):
    """One mmpretrain ViT block on ``[x_cls; P; X]`` (eval mode), written
    with plain tensor ops; the prompts' outputs dropped."""
    B, _, C = x.shape
    p, heads = prompts.shape[0], block.attn.num_heads
    d = C // heads
    z = torch.cat([x[:, :1], prompts.expand(B, p, C), x[:, 1:]], dim=1)
    n = layer_norm(z, block.ln1)
    qkv = n @ block.attn.qkv.weight.T + block.attn.qkv.bias
    outs = []
    for h in range(heads):
        q = qkv[..., h * d:(h + 1) * d]
        k = qkv[..., C + h * d:C + (h + 1) * d]
        v = qkv[..., 2 * C + h * d:2 * C + (h + 1) * d]
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), -1)
        outs.append(weights @ v)
    proj = block.attn.proj
    z = z + torch.cat(outs, -1) @ proj.weight.T + proj.bias
    fc1, fc2 = block.ffn.layers[0][0], block.ffn.layers[1]
    h = layer_norm(z, block.ln2) @ fc1.weight.T + fc1.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    z = z + h @ fc2.weight.T + fc2.bias
    return torch.cat([z[:, :1], z[:, 1 + p:]], dim=1)


def vpt_vit(num_tokens=3, **overrides):
    torch.manual_seed(0)
    model = ViT(peft=dict(type='VPT', num_tokens=num_tokens),
                **tiny_vit_kwargs(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return model


def test_prompted_block_matches_the_literal_transcription():
    model = vpt_vit().double().eval()
    block = model.layers[1]
    x = torch.randn(2, 1 + 20, 32, dtype=torch.float64)
    seen = {}
    block.ln1.register_forward_pre_hook(
        lambda m, args: seen.setdefault('x', args[0]))
    with torch.no_grad():
        out = model.forward_block(block, x, (4, 5))
        expected = literal_prompted_block(block, x, block.prompts.prompts)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # the block ran on [x_cls; P; X]
    prompts = block.prompts.prompts.expand(2, -1, -1)
    assert torch.equal(seen['x'][:, :1], x[:, :1])
    assert torch.equal(seen['x'][:, 1:4], prompts)
    assert torch.equal(seen['x'][:, 4:], x[:, 1:])


def test_prompts_are_fresh_in_every_block_and_reach_no_output():
    """The model equals the official deep-prompt loop over mmpretrain's
    blocks: insert the block's prompts after the class token, run the
    block, drop them."""
    model = vpt_vit(out_type='raw', out_indices=[1, 3]).double().eval()
    x = torch.randn(2, 3, 32, 40, dtype=torch.float64)
    with torch.no_grad():
        outs = model(x)
        tokens, _ = model.patch_embed(x)
        tokens = torch.cat((model.cls_token.expand(2, -1, -1), tokens), 1)
        tokens = tokens + resize_pos_embed(model.pos_embed, (4, 4), (4, 5),
                                           'bicubic', 1)
        expected = []
        for i, layer in enumerate(model.layers):
            prompts = layer.prompts.prompts.expand(2, -1, -1)
            tokens = torch.cat((tokens[:, :1], prompts, tokens[:, 1:]), 1)
            tokens = layer(tokens)  # mmpretrain's forward: no prompts inside
            tokens = torch.cat((tokens[:, :1], tokens[:, 4:]), 1)
            if i == 3:
                tokens = model.ln1(tokens)
            if i in (1, 3):
                expected.append(tokens)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_vpt_placement_count_initialisation_and_dropout():
    model = ViT(peft=dict(type='VPT', num_tokens=5, dropout=0.5),
                **tiny_vit_kwargs())
    bound = math.sqrt(6. / (3 * 8 * 8 + 32))  # official: patch 8, C 32
    for block in model.layers:
        assert isinstance(block.prompts, Prompts)
        assert block.prompts.prompts.shape == (5, 32)
        assert block.prompts.prompts.abs().max() <= bound
        assert not any(isinstance(m, PEFTModule) for name, m in
                       block.named_children() if name != 'prompts')
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f'layers.{i}.prompts.prompts' for i in range(4)}
    assert sum(p.numel() for p in model.parameters()
               if p.requires_grad) == 4 * 5 * 32
    # dropout per sample (the official ViT drops out [B, p, C]), in training
    x = torch.zeros(2, 3, 32, 32)
    model.train()
    prompts = model.layers[0].prompts
    torch.manual_seed(0)
    z = prompts(torch.zeros(2, 17, 32), (4, 4))
    assert not torch.equal(z[0], z[1])
    model.eval()
    z = prompts(torch.zeros(2, 17, 32), (4, 4))
    assert torch.equal(z, prompts.prompts)
    assert model(x)[0].shape == (2, 32, 4, 4)


# -- block groups and ParaX's expert centers --------------------------------
@pytest.mark.parametrize('overrides, groups', [
    (dict(out_type='featmap', out_indices=[1, 3]), (2, 2)),
    (dict(out_type='featmap', out_indices=[0, 1]), (1, 1, 2)),
    (dict(out_type='raw', out_indices=[3]), (4, )),
    (dict(out_type='cls_token', out_indices=[1, 3]), (4, )),
    (dict(out_type='avg_featmap', out_indices=-1), (4, )),
    (dict(out_type='featmap', block_groups=[1, 3]), (1, 3)),
])
def test_block_groups(overrides, groups):
    model = ViT(**tiny_vit_kwargs(**overrides))
    assert model.block_groups == groups
    stages = model.peft_stages()
    assert [len(b) for _, b in stages] == list(groups)
    assert [b for _, blocks in stages for b in blocks] == list(model.layers)
    assert all(c == 32 for c, _ in stages)


def test_vit_l_setr_groups():
    with torch.device('meta'):
        model = ViT(arch='l', img_size=512, out_type='featmap',
                    out_indices=(9, 14, 19, 23))
    # groups end at the output blocks: 24 blocks
    assert model.block_groups == (10, 5, 5, 4)


def test_parax_builds_one_center_per_group():
    model = ViT(peft=dict(type='ParaX', hidden_dim=8, router_hidden=4),
                **tiny_vit_kwargs(out_indices=[0, 3]))
    assert model.block_groups == (1, 3)
    centers = model.expert_centers
    assert [len(c) for c in centers] == [1, 1]
    assert [c[0].num_experts for c in centers] == [1, 3]
    for i, block in enumerate(model.layers):
        stage = 0 if i == 0 else 1
        assert block.adapter1.center_key == (stage, 0)
        assert block.adapter2.center_key == (stage, 0)


def parax_count(C, groups, hidden_dim=128, h=16, adapters=2, kernels=3):
    """parax.md section 6: per adapter 27C + h(C+1) + G M (h+1) + r^2 + 4r + 7
    with G = 2 + len(K); per center M (2 r C + 83 r) (K = 3, 5, 7)."""
    G = 2 + kernels
    return sum(
        M * adapters * (27 * C + h * (C + 1) + G * M * (h + 1) +
                        hidden_dim**2 + 4 * hidden_dim + 7) +
        M * (2 * hidden_dim * C + 83 * hidden_dim)
        for M in groups)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_parax_count_matches_the_formula_on_a_tiny_vit():
    model = ViT(peft=dict(type='ParaX', hidden_dim=8, router_hidden=4),
                **tiny_vit_kwargs(out_indices=[0, 3]))
    assert trainable(model) == parax_count(32, (1, 3), hidden_dim=8, h=4)


@pytest.mark.parametrize('kwargs, sites, count', [
    # ViT-B/16 (12 blocks, C 768): one group, two adapters per block
    (dict(arch='b'), None, 3709896),
    (dict(arch='b'), ['post_mlp'], 3098340),
    # ViT-L/16 SETR (24 blocks, C 1024): groups (10, 5, 5, 4)
    (dict(arch='l', img_size=512, out_type='featmap',
          out_indices=(9, 14, 19, 23)), None, 9500300),
    (dict(arch='l', img_size=512, out_type='featmap',
          out_indices=(9, 14, 19, 23)), ['post_mlp'], 8023366),
])
def test_parax_counts_of_vit_b_and_vit_l(kwargs, sites, count):
    with torch.device('meta'):
        model = ViT(peft=dict(type='ParaX', sites=sites), **kwargs)
    adapters = 1 if sites else 2
    assert count == parax_count(model.embed_dims, model.block_groups,
                                adapters=adapters)
    assert trainable(model) == count
    groups = model.peft_components()
    assert set(groups) == {'adapters', 'expert_centers', 'output_norms',
                           'pretrained'}
    assert not groups['output_norms']


def test_lora_on_the_q_and_v_thirds_of_qkv():
    model = ViT(peft=dict(type='LoRA', rank=4, targets=['qkv:qv']),
                **tiny_vit_kwargs())
    for block in model.layers:
        qkv = block.attn.qkv
        assert set(qkv._modules) == {'lora_q', 'lora_v'}
        assert (qkv.lora_q.start, qkv.lora_v.start) == (0, 64)
    assert trainable(model) == 4 * (4 * 4 * 32)  # 4 r C per block
    default = ViT(peft=dict(type='LoRA', rank=4), **tiny_vit_kwargs())
    assert set(default.layers[0].attn.qkv._modules) == {'lora_q', 'lora_v'}


@pytest.mark.parametrize('train', [True, False])
def test_avg_featmap_pooled_norm_is_a_new_layer(train):
    model = ViT(peft=dict(type='LoRA', rank=4, train_output_norms=train),
                **tiny_vit_kwargs(out_type='avg_featmap', out_indices=-1))
    assert model.new_module_names() == ['ln2']
    assert model.ln2.weight.requires_grad is train
    assert not model.ln1.weight.requires_grad
    assert set(model.peft_components()['output_norms']) == {
        'ln2.weight', 'ln2.bias'}


# -- errors ------------------------------------------------------------------
@pytest.mark.parametrize('groups', [[2, 1], [2, 0, 2], [2.0, 2], 'ab', []])
def test_bad_block_groups_raise(groups):
    with pytest.raises(ValueError, match='ViT: block_groups must be a list of '
                       'positive integers summing to the depth 4'):
        ViT(block_groups=groups, **tiny_vit_kwargs())


def test_frozen_stages_refused_with_a_method():
    with pytest.raises(ValueError, match='frozen_stages=1'):
        ViT(peft=dict(type='LoRA'), frozen_stages=1, **tiny_vit_kwargs())
    ViT(peft=dict(type='LoRA'), frozen_stages=0, **tiny_vit_kwargs())
    full = ViT(frozen_stages=1, **tiny_vit_kwargs())  # upstream's meaning
    assert not full.layers[0].ln1.weight.requires_grad
    assert full.layers[1].ln1.weight.requires_grad


@pytest.mark.parametrize('peft, match', [
    (dict(type='CoLoRA'), 'CoLoRA cannot adapt ViT'),
    (dict(type='Mona', sites=['post_block']), "Mona needs site.*'post_block'"
     ".*ViT"),
    (dict(type='LoRA', targets=['dwconv']), "LoRA targets layers 'dwconv'.*"
     'ViT'),
])
def test_what_vit_does_not_offer_raises(peft, match):
    with pytest.raises(ValueError, match=match):
        ViT(peft=peft, **tiny_vit_kwargs())


@pytest.mark.parametrize('with_cls_token', [True, False])
def test_repadapter_merges_exactly(with_cls_token):
    """The adapters see every token, the class token included (as the
    official ViT code), so a merged qkv / fc1 computes what they did."""
    model = ViT(peft=dict(type='RepAdapter', hidden_dim=8, dropout=0.),
                **tiny_vit_kwargs(with_cls_token=with_cls_token)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        x = torch.randn(2, 3, 32, 40)
        before = model(x)
        model.peft.merge(model)
        after = model(x)
    assert not hasattr(model.layers[0], 'attn_in_adapter')
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# method -> whether its site modules act on the class token (official ViT
# code: AdaptFormer's custom_modules.py and RepAdapter's repadapter.py adapt
# every token; the reference ParaX ViT its patch tokens; Mona's convs need
# the patch grid; LoRand is token-wise)
CLASS_TOKEN = {
    'AdaptFormer': (dict(hidden_dim=8, dropout=0.), True),
    'RepAdapter': (dict(hidden_dim=8, dropout=0.), True),
    'LoRand': (dict(hidden_dim=8, num_branches=2, branch_rank=2), True),
    'ParaX': (dict(hidden_dim=8, router_hidden=4, sites=['post_mlp']), False),
    'Mona': (dict(hidden_dim=8, dropout=0.), False),
}


@pytest.mark.parametrize('method', sorted(CLASS_TOKEN))
def test_class_token_as_the_official_vit_code(method):
    """One block with the method's modules switched on: the class token
    leaves it changed exactly when the method adapts it."""
    kwargs, adapts = CLASS_TOKEN[method]
    torch.manual_seed(0)
    model = ViT(peft=dict(type=method, **kwargs), **tiny_vit_kwargs()).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    assert model.peft.adapts_class_token is adapts
    block, x = model.layers[0], torch.randn(2, 1 + 5 * 7, 32)
    with torch.no_grad():
        out = model.forward_block(block, x, (5, 7))
        plain = block(x)
    assert not torch.allclose(out[:, 1:], plain[:, 1:])
    assert torch.equal(out[:, 0], plain[:, 0]) is not adapts
