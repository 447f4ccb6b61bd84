"""Official checkpoint key layouts, written out literally.

Each table below is the layout of an official release, for a tiny
architecture of the family: every key with its shape, as found under
``'model'`` in the released files. The shapes are written as numbers, not
derived from our modules, so that renaming a parameter of a backbone (or
changing its shape) breaks these tests the way it would break loading the
real files. A checkpoint with exactly these keys and random tensors is
written with ``torch.save``, loaded strictly through
``init_cfg=dict(type='Pretrained', ...)`` + ``init_weights()``, and every
pretrained tensor of the backbone is compared with the file's through the
known renaming of the family.
"""
import pytest
import torch

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.testing import tiny_swin_kwargs

# -- Microsoft Swin --------------------------------------------------------
# swin_*_patch4_window7_224.pth with embed_dims 16, depths (2, 2, 2, 2),
# heads (1, 2, 4, 8), window 7, patch 4, trained at 224: stage resolutions
# 56, 28, 14, 7; shifted blocks (odd j) carry their mask
# [(resolution / 7)^2, 49, 49], except at 7 x 7 where nothing is shifted;
# PatchMerging reduction [2C, 4C] without bias; ImageNet-1K head.
SWIN_MICROSOFT = """
patch_embed.proj.weight                              16 3 4 4
patch_embed.proj.bias                                16
patch_embed.norm.weight                              16
patch_embed.norm.bias                                16
layers.0.blocks.0.norm1.weight                       16
layers.0.blocks.0.norm1.bias                         16
layers.0.blocks.0.attn.relative_position_bias_table  169 1
layers.0.blocks.0.attn.relative_position_index       49 49
layers.0.blocks.0.attn.qkv.weight                    48 16
layers.0.blocks.0.attn.qkv.bias                      48
layers.0.blocks.0.attn.proj.weight                   16 16
layers.0.blocks.0.attn.proj.bias                     16
layers.0.blocks.0.norm2.weight                       16
layers.0.blocks.0.norm2.bias                         16
layers.0.blocks.0.mlp.fc1.weight                     64 16
layers.0.blocks.0.mlp.fc1.bias                       64
layers.0.blocks.0.mlp.fc2.weight                     16 64
layers.0.blocks.0.mlp.fc2.bias                       16
layers.0.blocks.1.attn_mask                          64 49 49
layers.0.blocks.1.norm1.weight                       16
layers.0.blocks.1.norm1.bias                         16
layers.0.blocks.1.attn.relative_position_bias_table  169 1
layers.0.blocks.1.attn.relative_position_index       49 49
layers.0.blocks.1.attn.qkv.weight                    48 16
layers.0.blocks.1.attn.qkv.bias                      48
layers.0.blocks.1.attn.proj.weight                   16 16
layers.0.blocks.1.attn.proj.bias                     16
layers.0.blocks.1.norm2.weight                       16
layers.0.blocks.1.norm2.bias                         16
layers.0.blocks.1.mlp.fc1.weight                     64 16
layers.0.blocks.1.mlp.fc1.bias                       64
layers.0.blocks.1.mlp.fc2.weight                     16 64
layers.0.blocks.1.mlp.fc2.bias                       16
layers.0.downsample.reduction.weight                 32 64
layers.0.downsample.norm.weight                      64
layers.0.downsample.norm.bias                        64
layers.1.blocks.0.norm1.weight                       32
layers.1.blocks.0.norm1.bias                         32
layers.1.blocks.0.attn.relative_position_bias_table  169 2
layers.1.blocks.0.attn.relative_position_index       49 49
layers.1.blocks.0.attn.qkv.weight                    96 32
layers.1.blocks.0.attn.qkv.bias                      96
layers.1.blocks.0.attn.proj.weight                   32 32
layers.1.blocks.0.attn.proj.bias                     32
layers.1.blocks.0.norm2.weight                       32
layers.1.blocks.0.norm2.bias                         32
layers.1.blocks.0.mlp.fc1.weight                     128 32
layers.1.blocks.0.mlp.fc1.bias                       128
layers.1.blocks.0.mlp.fc2.weight                     32 128
layers.1.blocks.0.mlp.fc2.bias                       32
layers.1.blocks.1.attn_mask                          16 49 49
layers.1.blocks.1.norm1.weight                       32
layers.1.blocks.1.norm1.bias                         32
layers.1.blocks.1.attn.relative_position_bias_table  169 2
layers.1.blocks.1.attn.relative_position_index       49 49
layers.1.blocks.1.attn.qkv.weight                    96 32
layers.1.blocks.1.attn.qkv.bias                      96
layers.1.blocks.1.attn.proj.weight                   32 32
layers.1.blocks.1.attn.proj.bias                     32
layers.1.blocks.1.norm2.weight                       32
layers.1.blocks.1.norm2.bias                         32
layers.1.blocks.1.mlp.fc1.weight                     128 32
layers.1.blocks.1.mlp.fc1.bias                       128
layers.1.blocks.1.mlp.fc2.weight                     32 128
layers.1.blocks.1.mlp.fc2.bias                       32
layers.1.downsample.reduction.weight                 64 128
layers.1.downsample.norm.weight                      128
layers.1.downsample.norm.bias                        128
layers.2.blocks.0.norm1.weight                       64
layers.2.blocks.0.norm1.bias                         64
layers.2.blocks.0.attn.relative_position_bias_table  169 4
layers.2.blocks.0.attn.relative_position_index       49 49
layers.2.blocks.0.attn.qkv.weight                    192 64
layers.2.blocks.0.attn.qkv.bias                      192
layers.2.blocks.0.attn.proj.weight                   64 64
layers.2.blocks.0.attn.proj.bias                     64
layers.2.blocks.0.norm2.weight                       64
layers.2.blocks.0.norm2.bias                         64
layers.2.blocks.0.mlp.fc1.weight                     256 64
layers.2.blocks.0.mlp.fc1.bias                       256
layers.2.blocks.0.mlp.fc2.weight                     64 256
layers.2.blocks.0.mlp.fc2.bias                       64
layers.2.blocks.1.attn_mask                          4 49 49
layers.2.blocks.1.norm1.weight                       64
layers.2.blocks.1.norm1.bias                         64
layers.2.blocks.1.attn.relative_position_bias_table  169 4
layers.2.blocks.1.attn.relative_position_index       49 49
layers.2.blocks.1.attn.qkv.weight                    192 64
layers.2.blocks.1.attn.qkv.bias                      192
layers.2.blocks.1.attn.proj.weight                   64 64
layers.2.blocks.1.attn.proj.bias                     64
layers.2.blocks.1.norm2.weight                       64
layers.2.blocks.1.norm2.bias                         64
layers.2.blocks.1.mlp.fc1.weight                     256 64
layers.2.blocks.1.mlp.fc1.bias                       256
layers.2.blocks.1.mlp.fc2.weight                     64 256
layers.2.blocks.1.mlp.fc2.bias                       64
layers.2.downsample.reduction.weight                 128 256
layers.2.downsample.norm.weight                      256
layers.2.downsample.norm.bias                        256
layers.3.blocks.0.norm1.weight                       128
layers.3.blocks.0.norm1.bias                         128
layers.3.blocks.0.attn.relative_position_bias_table  169 8
layers.3.blocks.0.attn.relative_position_index       49 49
layers.3.blocks.0.attn.qkv.weight                    384 128
layers.3.blocks.0.attn.qkv.bias                      384
layers.3.blocks.0.attn.proj.weight                   128 128
layers.3.blocks.0.attn.proj.bias                     128
layers.3.blocks.0.norm2.weight                       128
layers.3.blocks.0.norm2.bias                         128
layers.3.blocks.0.mlp.fc1.weight                     512 128
layers.3.blocks.0.mlp.fc1.bias                       512
layers.3.blocks.0.mlp.fc2.weight                     128 512
layers.3.blocks.0.mlp.fc2.bias                       128
layers.3.blocks.1.norm1.weight                       128
layers.3.blocks.1.norm1.bias                         128
layers.3.blocks.1.attn.relative_position_bias_table  169 8
layers.3.blocks.1.attn.relative_position_index       49 49
layers.3.blocks.1.attn.qkv.weight                    384 128
layers.3.blocks.1.attn.qkv.bias                      384
layers.3.blocks.1.attn.proj.weight                   128 128
layers.3.blocks.1.attn.proj.bias                     128
layers.3.blocks.1.norm2.weight                       128
layers.3.blocks.1.norm2.bias                         128
layers.3.blocks.1.mlp.fc1.weight                     512 128
layers.3.blocks.1.mlp.fc1.bias                       512
layers.3.blocks.1.mlp.fc2.weight                     128 512
layers.3.blocks.1.mlp.fc2.bias                       128
norm.weight                                          128
norm.bias                                            128
head.weight                                          1000 128
head.bias                                            1000
"""

SWIN_KWARGS = tiny_swin_kwargs(depths=(2, 2, 2, 2), drop_path_rate=0.0)

# -- Facebook ConvNeXt -----------------------------------------------------
# convnext_*_22k_224.pth with channels (16, 32, 64, 128), depths
# (2, 2, 2, 2): stem conv 4x4 s4 + LN, then LN + conv 2x2 s2 before stages
# 1..3; blocks with dwconv 7x7, LN, pwconv1 / pwconv2 (Linear), layer scale
# gamma; the classifier's norm and its ImageNet-22K head (21841 classes).
CONVNEXT_FACEBOOK = """
downsample_layers.0.0.weight  16 3 4 4
downsample_layers.0.0.bias    16
downsample_layers.0.1.weight  16
downsample_layers.0.1.bias    16
downsample_layers.1.0.weight  16
downsample_layers.1.0.bias    16
downsample_layers.1.1.weight  32 16 2 2
downsample_layers.1.1.bias    32
downsample_layers.2.0.weight  32
downsample_layers.2.0.bias    32
downsample_layers.2.1.weight  64 32 2 2
downsample_layers.2.1.bias    64
downsample_layers.3.0.weight  64
downsample_layers.3.0.bias    64
downsample_layers.3.1.weight  128 64 2 2
downsample_layers.3.1.bias    128
stages.0.0.gamma              16
stages.0.0.dwconv.weight      16 1 7 7
stages.0.0.dwconv.bias        16
stages.0.0.norm.weight        16
stages.0.0.norm.bias          16
stages.0.0.pwconv1.weight     64 16
stages.0.0.pwconv1.bias       64
stages.0.0.pwconv2.weight     16 64
stages.0.0.pwconv2.bias       16
stages.0.1.gamma              16
stages.0.1.dwconv.weight      16 1 7 7
stages.0.1.dwconv.bias        16
stages.0.1.norm.weight        16
stages.0.1.norm.bias          16
stages.0.1.pwconv1.weight     64 16
stages.0.1.pwconv1.bias       64
stages.0.1.pwconv2.weight     16 64
stages.0.1.pwconv2.bias       16
stages.1.0.gamma              32
stages.1.0.dwconv.weight      32 1 7 7
stages.1.0.dwconv.bias        32
stages.1.0.norm.weight        32
stages.1.0.norm.bias          32
stages.1.0.pwconv1.weight     128 32
stages.1.0.pwconv1.bias       128
stages.1.0.pwconv2.weight     32 128
stages.1.0.pwconv2.bias       32
stages.1.1.gamma              32
stages.1.1.dwconv.weight      32 1 7 7
stages.1.1.dwconv.bias        32
stages.1.1.norm.weight        32
stages.1.1.norm.bias          32
stages.1.1.pwconv1.weight     128 32
stages.1.1.pwconv1.bias       128
stages.1.1.pwconv2.weight     32 128
stages.1.1.pwconv2.bias       32
stages.2.0.gamma              64
stages.2.0.dwconv.weight      64 1 7 7
stages.2.0.dwconv.bias        64
stages.2.0.norm.weight        64
stages.2.0.norm.bias          64
stages.2.0.pwconv1.weight     256 64
stages.2.0.pwconv1.bias       256
stages.2.0.pwconv2.weight     64 256
stages.2.0.pwconv2.bias       64
stages.2.1.gamma              64
stages.2.1.dwconv.weight      64 1 7 7
stages.2.1.dwconv.bias        64
stages.2.1.norm.weight        64
stages.2.1.norm.bias          64
stages.2.1.pwconv1.weight     256 64
stages.2.1.pwconv1.bias       256
stages.2.1.pwconv2.weight     64 256
stages.2.1.pwconv2.bias       64
stages.3.0.gamma              128
stages.3.0.dwconv.weight      128 1 7 7
stages.3.0.dwconv.bias        128
stages.3.0.norm.weight        128
stages.3.0.norm.bias          128
stages.3.0.pwconv1.weight     512 128
stages.3.0.pwconv1.bias       512
stages.3.0.pwconv2.weight     128 512
stages.3.0.pwconv2.bias       128
stages.3.1.gamma              128
stages.3.1.dwconv.weight      128 1 7 7
stages.3.1.dwconv.bias        128
stages.3.1.norm.weight        128
stages.3.1.norm.bias          128
stages.3.1.pwconv1.weight     512 128
stages.3.1.pwconv1.bias       512
stages.3.1.pwconv2.weight     128 512
stages.3.1.pwconv2.bias       128
norm.weight                   128
norm.bias                     128
head.weight                   21841 128
head.bias                     21841
"""

CONVNEXT_KWARGS = dict(
    arch=dict(depths=[2, 2, 2, 2], channels=[16, 32, 64, 128]),
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.0,
    layer_scale_init_value=1.0)

# -- VMamba v2 ---------------------------------------------------------------
# vssm_*_ckpt_epoch_*.pth with dims (16, 32, 64, 128), depths (1, 1, 2, 1),
# ssm_ratio 2 (E = 32, 64, 128, 256), d_state N = 1, dt_rank
# R = ceil(C / 16) = 1, 2, 4, 8, K = 4 scan directions; patch embed v2
# (conv 3 -> 8, LN, GELU, conv 8 -> 16, LN), downsample v3 (conv 3x3 s2,
# LN); classifier norm and ImageNet-1K head.
VMAMBA_OFFICIAL = """
patch_embed.0.weight                  8 3 3 3
patch_embed.0.bias                    8
patch_embed.2.weight                  8
patch_embed.2.bias                    8
patch_embed.5.weight                  16 8 3 3
patch_embed.5.bias                    16
patch_embed.7.weight                  16
patch_embed.7.bias                    16
layers.0.blocks.0.norm.weight         16
layers.0.blocks.0.norm.bias           16
layers.0.blocks.0.op.x_proj_weight    4 3 32
layers.0.blocks.0.op.dt_projs_weight  4 32 1
layers.0.blocks.0.op.dt_projs_bias    4 32
layers.0.blocks.0.op.A_logs           128 1
layers.0.blocks.0.op.Ds               128
layers.0.blocks.0.op.in_proj.weight   32 16
layers.0.blocks.0.op.conv2d.weight    32 1 3 3
layers.0.blocks.0.op.out_norm.weight  32
layers.0.blocks.0.op.out_norm.bias    32
layers.0.blocks.0.op.out_proj.weight  16 32
layers.0.blocks.0.norm2.weight        16
layers.0.blocks.0.norm2.bias          16
layers.0.blocks.0.mlp.fc1.weight      64 16
layers.0.blocks.0.mlp.fc1.bias        64
layers.0.blocks.0.mlp.fc2.weight      16 64
layers.0.blocks.0.mlp.fc2.bias        16
layers.0.downsample.1.weight          32 16 3 3
layers.0.downsample.1.bias            32
layers.0.downsample.3.weight          32
layers.0.downsample.3.bias            32
layers.1.blocks.0.norm.weight         32
layers.1.blocks.0.norm.bias           32
layers.1.blocks.0.op.x_proj_weight    4 4 64
layers.1.blocks.0.op.dt_projs_weight  4 64 2
layers.1.blocks.0.op.dt_projs_bias    4 64
layers.1.blocks.0.op.A_logs           256 1
layers.1.blocks.0.op.Ds               256
layers.1.blocks.0.op.in_proj.weight   64 32
layers.1.blocks.0.op.conv2d.weight    64 1 3 3
layers.1.blocks.0.op.out_norm.weight  64
layers.1.blocks.0.op.out_norm.bias    64
layers.1.blocks.0.op.out_proj.weight  32 64
layers.1.blocks.0.norm2.weight        32
layers.1.blocks.0.norm2.bias          32
layers.1.blocks.0.mlp.fc1.weight      128 32
layers.1.blocks.0.mlp.fc1.bias        128
layers.1.blocks.0.mlp.fc2.weight      32 128
layers.1.blocks.0.mlp.fc2.bias        32
layers.1.downsample.1.weight          64 32 3 3
layers.1.downsample.1.bias            64
layers.1.downsample.3.weight          64
layers.1.downsample.3.bias            64
layers.2.blocks.0.norm.weight         64
layers.2.blocks.0.norm.bias           64
layers.2.blocks.0.op.x_proj_weight    4 6 128
layers.2.blocks.0.op.dt_projs_weight  4 128 4
layers.2.blocks.0.op.dt_projs_bias    4 128
layers.2.blocks.0.op.A_logs           512 1
layers.2.blocks.0.op.Ds               512
layers.2.blocks.0.op.in_proj.weight   128 64
layers.2.blocks.0.op.conv2d.weight    128 1 3 3
layers.2.blocks.0.op.out_norm.weight  128
layers.2.blocks.0.op.out_norm.bias    128
layers.2.blocks.0.op.out_proj.weight  64 128
layers.2.blocks.0.norm2.weight        64
layers.2.blocks.0.norm2.bias          64
layers.2.blocks.0.mlp.fc1.weight      256 64
layers.2.blocks.0.mlp.fc1.bias        256
layers.2.blocks.0.mlp.fc2.weight      64 256
layers.2.blocks.0.mlp.fc2.bias        64
layers.2.blocks.1.norm.weight         64
layers.2.blocks.1.norm.bias           64
layers.2.blocks.1.op.x_proj_weight    4 6 128
layers.2.blocks.1.op.dt_projs_weight  4 128 4
layers.2.blocks.1.op.dt_projs_bias    4 128
layers.2.blocks.1.op.A_logs           512 1
layers.2.blocks.1.op.Ds               512
layers.2.blocks.1.op.in_proj.weight   128 64
layers.2.blocks.1.op.conv2d.weight    128 1 3 3
layers.2.blocks.1.op.out_norm.weight  128
layers.2.blocks.1.op.out_norm.bias    128
layers.2.blocks.1.op.out_proj.weight  64 128
layers.2.blocks.1.norm2.weight        64
layers.2.blocks.1.norm2.bias          64
layers.2.blocks.1.mlp.fc1.weight      256 64
layers.2.blocks.1.mlp.fc1.bias        256
layers.2.blocks.1.mlp.fc2.weight      64 256
layers.2.blocks.1.mlp.fc2.bias        64
layers.2.downsample.1.weight          128 64 3 3
layers.2.downsample.1.bias            128
layers.2.downsample.3.weight          128
layers.2.downsample.3.bias            128
layers.3.blocks.0.norm.weight         128
layers.3.blocks.0.norm.bias           128
layers.3.blocks.0.op.x_proj_weight    4 10 256
layers.3.blocks.0.op.dt_projs_weight  4 256 8
layers.3.blocks.0.op.dt_projs_bias    4 256
layers.3.blocks.0.op.A_logs           1024 1
layers.3.blocks.0.op.Ds               1024
layers.3.blocks.0.op.in_proj.weight   256 128
layers.3.blocks.0.op.conv2d.weight    256 1 3 3
layers.3.blocks.0.op.out_norm.weight  256
layers.3.blocks.0.op.out_norm.bias    256
layers.3.blocks.0.op.out_proj.weight  128 256
layers.3.blocks.0.norm2.weight        128
layers.3.blocks.0.norm2.bias          128
layers.3.blocks.0.mlp.fc1.weight      512 128
layers.3.blocks.0.mlp.fc1.bias        512
layers.3.blocks.0.mlp.fc2.weight      128 512
layers.3.blocks.0.mlp.fc2.bias        128
classifier.norm.weight                128
classifier.norm.bias                  128
classifier.head.weight                1000 128
classifier.head.bias                  1000
"""

VMAMBA_KWARGS = dict(
    arch=dict(dims=16, depths=(1, 1, 2, 1), ssm_ratio=2.0),
    drop_path_rate=0.0)


def parse(table):
    """[(key, shape)] of a table of 'key d0 d1 ...' lines."""
    rows = []
    for line in table.strip().splitlines():
        key, *dims = line.split()
        rows.append((key, tuple(int(d) for d in dims)))
    assert len({k for k, _ in rows}) == len(rows), 'duplicate keys'
    return rows


def random_state_dict(table, seed):
    gen = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(shape, generator=gen)
        for key, shape in parse(table)
    }


def rename(state_dict, old, new):
    """The same tensors, ``old`` replaced by ``new`` in one key."""
    assert old in state_dict
    return {new if k == old else k: v for k, v in state_dict.items()}


def load(cls, kwargs, path):
    torch.manual_seed(0)
    model = cls(
        init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model


def assert_loaded(model, state, mapping, output_norms):
    """Every model tensor either comes from the file (``mapping`` gives
    model key -> expected tensor) or is one of the new output norms."""
    own = model.state_dict()
    assert set(mapping) <= set(own), sorted(set(mapping) - set(own))
    assert set(own) - set(mapping) == set(output_norms), \
        sorted(set(own) - set(mapping))
    for key, expected in mapping.items():
        assert own[key].shape == expected.shape, key
        assert torch.equal(own[key], expected.to(own[key].dtype)), key
    # the pretrained parameters are exactly the ones mapped from the file
    params = {n for n, _ in model.named_parameters()}
    assert params - set(mapping) == set(output_norms)


# -- Swin ---------------------------------------------------------------------
def microsoft_relative_position_index(window):
    """[w^2, w^2] index into the (2w - 1)^2 table, as Microsoft builds it:
    (dy + w - 1) * (2w - 1) + (dx + w - 1) for the offset of token j from
    token i, tokens in row-major order."""
    index = torch.empty(window * window, window * window, dtype=torch.int64)
    for i in range(window * window):
        for j in range(window * window):
            dy = i // window - j // window
            dx = i % window - j % window
            index[i, j] = (dy + window - 1) * (2 * window - 1) + (
                dx + window - 1)
    return index


def microsoft_to_unfold(weight):
    """PatchMerging tensor [..., 4C] from Microsoft's input order (x0, x1,
    x2, x3) = (top-left, bottom-left, top-right, bottom-right), index
    j * C + c, to OpenMMLab's nn.Unfold order: index c * 4 + u with the
    2x2 neighbours u row-major (top-left, top-right, bottom-left,
    bottom-right)."""
    C = weight.shape[-1] // 4
    by_neighbour = weight.reshape(*weight.shape[:-1], 4, C)
    microsoft_slot = [0, 2, 1, 3]  # of unfold neighbours u = 0, 1, 2, 3
    by_neighbour = by_neighbour[..., microsoft_slot, :]
    return by_neighbour.transpose(-1, -2).reshape(weight.shape)


SWIN_RENAMES = (
    ('patch_embed.proj.', 'patch_embed.projection.'),
    ('.attn.', '.attn.w_msa.'),
    ('.mlp.fc1.', '.ffn.layers.0.0.'),
    ('.mlp.fc2.', '.ffn.layers.1.'),
)


def swin_expected(state):
    """OpenMMLab key -> tensor the backbone must hold after loading."""
    out = {}
    for key, value in state.items():
        if key.startswith(('norm.', 'head.')) or key.endswith('attn_mask'):
            continue  # ImageNet classifier and precomputed masks
        new = key
        for old, ours in SWIN_RENAMES:
            new = new.replace(old, ours)
        if new.startswith('layers.'):
            new = 'stages.' + new[len('layers.'):]
        if '.downsample.' in key:
            value = microsoft_to_unfold(value)
        out[new] = value
    return out


def swin_microsoft_checkpoint(path, seed=1):
    state = random_state_dict(SWIN_MICROSOFT, seed)
    index = microsoft_relative_position_index(7)
    for key in state:
        if key.endswith('relative_position_index'):
            state[key] = index.clone()
    torch.save({'model': state}, path)
    return state


def test_microsoft_swin_layout_loads(tmp_path):
    path = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    state = swin_microsoft_checkpoint(path)
    assert len(state) == 132
    model = load(Swin, SWIN_KWARGS, path)
    assert_loaded(model, state, swin_expected(state),
                  [f'norm{i}.{p}' for i in range(4)
                   for p in ('weight', 'bias')])
    # the relative position index means the same in both layouts
    fresh = Swin(**SWIN_KWARGS).state_dict()
    assert torch.equal(
        fresh['stages.2.blocks.1.attn.w_msa.relative_position_index'],
        microsoft_relative_position_index(7))

    # PatchMerging with the loaded weights computes what Microsoft's does
    # with the file's: LN over cat(x0, x1, x2, x3), then the reduction
    x = torch.randn(2, 8, 6, 16)
    x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
    x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    merged = torch.cat([x0, x1, x2, x3], -1).reshape(2, 12, 64)
    prefix = 'layers.0.downsample.'
    merged = torch.nn.functional.layer_norm(
        merged, (64, ), state[prefix + 'norm.weight'],
        state[prefix + 'norm.bias'])
    expected = merged @ state[prefix + 'reduction.weight'].t()
    with torch.no_grad():
        out, hw = model.stages[0].downsample(x.reshape(2, 48, 16), (8, 6))
    assert tuple(hw) == (4, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_microsoft_swin_renamed_key_raises(tmp_path):
    state = swin_microsoft_checkpoint(tmp_path / 'swin.pth')
    state = rename(state, 'layers.1.blocks.0.norm2.weight',
                   'layers.1.blocks.0.ln_2.weight')
    path = tmp_path / 'swin_renamed.pth'
    torch.save({'model': state}, path)
    with pytest.raises(RuntimeError) as info:
        load(Swin, SWIN_KWARGS, path)
    message = str(info.value)
    assert '1.blocks.0.ln_2.weight' in message  # what the file has
    assert '1.blocks.0.norm2.weight' in message  # what is missing


# -- ConvNeXt -----------------------------------------------------------------
CONVNEXT_RENAMES = (
    ('.dwconv.', '.depthwise_conv.'),
    ('.pwconv1.', '.pointwise_conv1.'),
    ('.pwconv2.', '.pointwise_conv2.'),
)


def convnext_expected(state):
    out = {}
    for key, value in state.items():
        if key.startswith(('norm.', 'head.')):
            continue  # ImageNet classifier norm and head
        for old, ours in CONVNEXT_RENAMES:
            key = key.replace(old, ours)
        out[key] = value
    return out


def test_facebook_convnext_layout_loads(tmp_path):
    state = random_state_dict(CONVNEXT_FACEBOOK, seed=2)
    assert len(state) == 92
    path = tmp_path / 'convnext_tiny_22k_224.pth'
    torch.save({'model': state}, path)
    model = load(ConvNeXt, CONVNEXT_KWARGS, path)
    output_norms = [f'norm{i}.{p}' for i in range(4)
                    for p in ('weight', 'bias')]
    assert_loaded(model, state, convnext_expected(state), output_norms)
    # the classifier's norm does not become the last output norm
    assert not torch.equal(model.state_dict()['norm3.weight'],
                           state['norm.weight'])


def test_facebook_convnext_renamed_key_raises(tmp_path):
    state = random_state_dict(CONVNEXT_FACEBOOK, seed=2)
    state = rename(state, 'stages.2.1.norm.weight', 'stages.2.1.ln.weight')
    path = tmp_path / 'convnext_renamed.pth'
    torch.save({'model': state}, path)
    with pytest.raises(RuntimeError) as info:
        load(ConvNeXt, CONVNEXT_KWARGS, path)
    message = str(info.value)
    assert 'stages.2.1.ln.weight' in message
    assert 'stages.2.1.norm.weight' in message


# -- VMamba -------------------------------------------------------------------
def vmamba_checkpoint(state, path, seed=3):
    """Wrapped as the training code saves it: weights under 'model' next
    to an EMA copy, optimizer and scheduler state and run information."""
    gen = torch.Generator().manual_seed(seed)
    ema = {k: torch.randn(v.shape, generator=gen) for k, v in state.items()}
    torch.save({
        'model': state,
        'model_ema': ema,
        'optimizer': {
            'state': {},
            'param_groups': [{'lr': 5e-4, 'params': [0, 1]}]
        },
        'lr_scheduler': {'last_epoch': 237},
        'max_accuracy': 83.9,
        'epoch': 237,
        'config': 'MODEL:\n  TYPE: vssm\n',
    }, path)


def test_vmamba_official_layout_loads(tmp_path):
    state = random_state_dict(VMAMBA_OFFICIAL, seed=4)
    assert len(state) == 114
    path = tmp_path / 'vssm_tiny_ckpt_epoch_237.pth'
    vmamba_checkpoint(state, path)
    model = load(VMamba, VMAMBA_KWARGS, path)
    expected = {
        k: v
        for k, v in state.items() if not k.startswith('classifier.')
    }
    own = model.state_dict()
    output_norms = sorted(set(own) - set(expected))
    # the backbone adds one LayerNorm per output, nothing else
    assert len(output_norms) == 8, output_norms
    assert all(k.count('.') == 1 and own[k].dim() == 1
               for k in output_norms), output_norms
    assert sorted(own[k].numel() for k in output_norms) == \
        [16, 16, 32, 32, 64, 64, 128, 128]
    assert_loaded(model, state, expected, output_norms)


def test_vmamba_official_renamed_key_raises(tmp_path):
    state = random_state_dict(VMAMBA_OFFICIAL, seed=4)
    state = rename(state, 'layers.2.blocks.1.norm2.weight',
                   'layers.2.blocks.1.ln_2.weight')
    path = tmp_path / 'vssm_renamed.pth'
    vmamba_checkpoint(state, path)
    with pytest.raises(RuntimeError) as info:
        load(VMamba, VMAMBA_KWARGS, path)
    message = str(info.value)
    assert 'layers.2.blocks.1.ln_2.weight' in message
    assert 'layers.2.blocks.1.norm2.weight' in message
