"""Swin checkpoints in the key layouts of the official releases.

OpenMMLab layout (``stages.*``, what ``mmparax.Swin`` holds)::

    patch_embed.projection.weight          [C, 3, p, p]
    stages.i.blocks.j.attn.w_msa.qkv.weight  [3C_i, C_i]
    stages.i.blocks.j.ffn.layers.0.0.weight  [4C_i, C_i]   (fc1)
    stages.i.blocks.j.ffn.layers.1.weight    [C_i, 4C_i]   (fc2)
    stages.i.downsample.reduction.weight     [2C_i, 4C_i]  (2x2 unfold order)
    norm<i>.weight                           [C_i]         (output norms)

Microsoft layout (``layers.*``, the official ``swin_*.pth`` files, weights
under ``'model'``)::

    patch_embed.proj.weight, layers.i.blocks.j.attn.qkv.weight,
    layers.i.blocks.j.mlp.fc1.weight, layers.i.downsample.reduction.weight
    (x0 x1 x2 x3 concat order), layers.i.blocks.j.attn_mask,
    norm.weight [C_last], head.weight [num_classes, C_last]
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn

# Microsoft concatenates the 2x2 neighbours as (x0, x1, x2, x3) = (top-left,
# bottom-left, top-right, bottom-right); nn.Unfold (OpenMMLab) walks them
# row-major. Swapping the middle two maps one to the other, both ways.
_UNFOLD_ORDER = [0, 2, 1, 3]

_STAGE_KEY = re.compile(r'^stages\.(\d+)\.(.*)$')
_OUTPUT_NORM_KEY = re.compile(r'^norm(\d+)\.(weight|bias)$')


def tiny_swin_kwargs(**overrides) -> dict:
    """Arguments of a tiny ``mmparax.Swin`` / ``mmparax.ParaXSwin``.

    embed_dims 16 (stage widths 16, 32, 64, 128), depths (2, 2, 2, 2), heads
    (1, 2, 4, 8), window 7, patch 4: a few hundred thousand parameters, the
    layout of Swin-T/B/L. ``overrides`` replace or add arguments.
    """
    kwargs = dict(
        pretrain_img_size=224,
        embed_dims=16,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        patch_norm=True,
        drop_path_rate=0.1)
    kwargs.update(overrides)
    return kwargs


def tiny_swin_state_dict(seed: int = 0,
                         random_all: bool = False,
                         **overrides) -> 'OrderedDict[str, torch.Tensor]':
    """OpenMMLab-layout state dict of a tiny ``mmparax.Swin``.

    Args:
        seed (int): Seed of the weights.
        random_all (bool): Draw every float tensor from N(0, 1), LayerNorm
            weights and biases included, so that any reordering or mix-up is
            visible when comparing. Otherwise initialise as for pretraining
            (Linear and position tables truncated normal std 0.02, LayerNorm
            1 / 0, patch conv PyTorch default). Default: False.
        **overrides: Arguments replacing those of :func:`tiny_swin_kwargs`.

    Returns:
        OrderedDict: ``stages.*`` keys (parameters and the
        ``relative_position_index`` buffers), detached CPU tensors.
    """
    from mmparax.models.backbones import Swin
    kwargs = tiny_swin_kwargs(**overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Swin(**kwargs)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                _trunc_normal(module.weight, gen)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        for name, param in model.named_parameters():
            if name.endswith(('relative_position_bias_table',
                              'absolute_pos_embed')):
                _trunc_normal(param, gen)
        if random_all:
            for param in model.parameters():
                param.copy_(torch.randn(param.shape, generator=gen))
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items())


def _trunc_normal(tensor, gen, std=0.02):
    values = torch.randn(tensor.shape, generator=gen).clamp_(-2.0, 2.0)
    tensor.copy_(values * std)


def _unfold_to_microsoft(weight: torch.Tensor) -> torch.Tensor:
    """Undo mmdet's reorder of a PatchMerging tensor.

    ``weight``: reduction [out, 4C] or norm [4C] in OpenMMLab (unfold)
    order, whose input index is ``c * 4 + j`` for channel c of neighbour j.
    Returns the same tensor with input index ``j' * C + c`` (Microsoft).
    """
    if weight.dim() == 1:
        return _unfold_to_microsoft(weight[None])[0]
    out_channels, in_channels = weight.shape
    w = weight.reshape(out_channels, in_channels // 4, 4).transpose(1, 2)
    return w[:, _UNFOLD_ORDER].reshape(out_channels, in_channels).contiguous()


def _stage_key_to_microsoft(stage: str, rest: str) -> str:
    if rest.startswith('blocks.'):
        block, _, name = rest[len('blocks.'):].partition('.')
        if name.startswith('attn.w_msa.'):
            name = 'attn.' + name[len('attn.w_msa.'):]
        elif name.startswith('ffn.layers.0.0.'):
            name = 'mlp.fc1.' + name[len('ffn.layers.0.0.'):]
        elif name.startswith('ffn.layers.1.'):
            name = 'mlp.fc2.' + name[len('ffn.layers.1.'):]
        elif not name.startswith(('norm1.', 'norm2.')):
            raise ValueError(f'stages.{stage}.{rest}: not a Swin block '
                             'parameter (adapters cannot be converted)')
        return f'layers.{stage}.blocks.{block}.{name}'
    if rest.startswith(('downsample.reduction.', 'downsample.norm.')):
        return f'layers.{stage}.{rest}'
    raise ValueError(f'stages.{stage}.{rest}: not a Swin stage parameter '
                     '(adapters and expert centers cannot be converted)')


def _shift_attn_mask(resolution: int, window: int) -> torch.Tensor:
    """Mask of a shifted-window block: [nW, window^2, window^2], 0 / -100."""
    shift = window // 2
    img = torch.zeros(resolution, resolution)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for h in spans:
        for w in spans:
            img[h, w] = region
            region += 1
    n = resolution // window
    windows = img.view(n, window, n, window).permute(0, 2, 1, 3)
    windows = windows.reshape(n * n, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def swin_to_microsoft(state_dict: Dict[str, torch.Tensor],
                      num_classes: Optional[int] = 1000,
                      attn_mask: bool = True,
                      img_size: int = 224,
                      seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """OpenMMLab-layout Swin state dict -> official Microsoft layout.

    The exact inverse of ``mmdet.models.backbones.swin.swin_converter`` on the
    backbone keys: ``swin_converter(swin_to_microsoft(sd))`` gives ``sd``
    back under ``backbone.`` (minus the output norms), tensor for tensor.
    Adds what a released file has beyond that: the classifier's final
    ``norm.*`` [C_last] (taken from the last output norm when present, else
    1 / 0), ``head.*`` [num_classes, C_last] and the ``attn_mask`` buffers of
    shifted blocks. The output norms ``norm<i>.*`` of the dense-prediction
    backbone are not in released files and are dropped.

    Args:
        state_dict (dict): OpenMMLab layout (``stages.*``), optionally under
            ``backbone.``. Adapter or other foreign keys raise ValueError.
        num_classes (int, optional): Classes of the ImageNet head; None
            writes no head. Default: 1000.
        attn_mask (bool): Add the precomputed shift masks of blocks with odd
            index, as in the official files. Default: True.
        img_size (int): Pretraining resolution the masks are computed for.
            Default: 224.
        seed (int): Seed of the head weights. Default: 0.

    Returns:
        OrderedDict: Microsoft-layout tensors.
    """
    if state_dict and all(k.startswith('backbone.') for k in state_dict):
        state_dict = OrderedDict(
            (k[len('backbone.'):], v) for k, v in state_dict.items())
    out = OrderedDict()
    output_norms = {}
    for key, value in state_dict.items():
        stage = _STAGE_KEY.match(key)
        norm = _OUTPUT_NORM_KEY.match(key)
        if stage:
            new_key = _stage_key_to_microsoft(*stage.groups())
            if '.downsample.' in new_key:
                value = _unfold_to_microsoft(value)
        elif norm:
            output_norms.setdefault(int(norm.group(1)), {})[norm.group(2)] = \
                value
            continue
        elif key.startswith('patch_embed.projection.'):
            new_key = key.replace('.projection.', '.proj.', 1)
        elif key.startswith('patch_embed.norm.') or \
                key == 'absolute_pos_embed':
            new_key = key
        else:
            raise ValueError(f'{key}: not a parameter of an OpenMMLab Swin')
        out[new_key] = value

    if not any(k.startswith('layers.') for k in out):
        raise ValueError('no stages.* keys: not an OpenMMLab Swin state dict')
    depths = _depths(out)
    last = max(depths)
    last_dim = _stage_width(out, last)
    final = output_norms.get(last, {})
    out['norm.weight'] = final.get('weight', torch.ones(last_dim)).clone()
    out['norm.bias'] = final.get('bias', torch.zeros(last_dim)).clone()
    if num_classes is not None:
        gen = torch.Generator().manual_seed(seed)
        head = torch.empty(num_classes, last_dim)
        _trunc_normal(head, gen)
        out['head.weight'] = head
        out['head.bias'] = torch.zeros(num_classes)
    if attn_mask:
        _add_attn_masks(out, depths, img_size)
    return out


def _depths(state_dict) -> Dict[int, int]:
    depths = {}
    for key in state_dict:
        m = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.', key)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            depths[i] = max(depths.get(i, 0), j + 1)
    return depths


def _stage_width(state_dict, stage: int) -> int:
    return state_dict[f'layers.{stage}.blocks.0.norm1.weight'].shape[0]


def _add_attn_masks(out, depths, img_size):
    patch = out['patch_embed.proj.weight'].shape[-1]
    resolution = img_size // patch
    for i in sorted(depths):
        table = out[f'layers.{i}.blocks.0.attn.relative_position_bias_table']
        window = (int(round(table.shape[0]**0.5)) + 1) // 2
        # Microsoft's rule: a stage no larger than its window is not shifted.
        if resolution > window and resolution % window == 0:
            mask = _shift_attn_mask(resolution, window)
            for j in range(1, depths[i], 2):
                out[f'layers.{i}.blocks.{j}.attn_mask'] = mask.clone()
        resolution //= 2


def write_checkpoint(path: str,
                     state_dict: Dict[str, torch.Tensor],
                     wrapper: Optional[str] = 'model',
                     extra: Optional[dict] = None) -> str:
    """Save ``state_dict`` the way official checkpoints are wrapped.

    Args:
        path (str): Output file; parent folders are created.
        state_dict (dict): Tensors to save (detached, CPU, contiguous).
        wrapper (str, optional): ``'model'`` (Microsoft releases:
            ``{'model': sd}``), ``'state_dict'`` (OpenMMLab:
            ``{'state_dict': sd, 'meta': {...}}``) or None (a bare state
            dict). Default: 'model'.
        extra (dict, optional): More top-level entries (tensors and plain
            Python only), e.g. ``{'meta': {...}}`` or an ``'optimizer'``.

    Returns:
        str: ``path``. The file loads with ``torch.load(weights_only=True)``.
    """
    tensors = OrderedDict(
        (k, v.detach().cpu().contiguous().clone())
        for k, v in state_dict.items())
    if wrapper is None:
        if extra:
            raise ValueError('extra entries need a wrapper key')
        obj = tensors
    elif wrapper == 'model':
        obj = {'model': tensors}
    elif wrapper == 'state_dict':
        obj = {'state_dict': tensors, 'meta': {'mmparax_testing': True}}
    else:
        raise ValueError(f"wrapper must be 'model', 'state_dict' or None, "
                         f'got {wrapper!r}')
    if extra:
        obj.update(extra)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    torch.save(obj, path)
    return path
