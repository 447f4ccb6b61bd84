"""ViT checkpoints in the key layouts of the official releases.

mmpretrain layout (what ``mmparax.ViT`` holds)::

    cls_token                         [1, 1, C]
    pos_embed                         [1, 1 + h*w, C]
    patch_embed.projection.weight     [C, 3, p, p]
    layers.i.ln1.weight               [C]
    layers.i.attn.qkv.weight          [3C, C]
    layers.i.attn.proj.weight         [C, C]
    layers.i.ln2.weight               [C]
    layers.i.ffn.layers.0.0.weight    [F, C]    (fc1)
    layers.i.ffn.layers.1.weight      [C, F]    (fc2)
    ln1.weight                        [C]       (final norm)

timm / Google layout (``jx_vit_large_p16_224-4ee7a4dc.pth``,
``vit_large_patch16_224.augreg_in21k``; a bare state dict)::

    cls_token, pos_embed, patch_embed.proj.*, blocks.i.norm1.*,
    blocks.i.attn.qkv.*, blocks.i.attn.proj.*, blocks.i.norm2.*,
    blocks.i.mlp.fc1.*, blocks.i.mlp.fc2.*, norm.*, head.* [classes, C]
    (IN-21K: 21843 classes; the first release also pre_logits.fc.* [C, C])

MAE layout (``mae_pretrain_vit_base.pth``, weights under ``'model'``): the
timm keys without a head.
"""
import re
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn

_LAYER_KEY = re.compile(r'^layers\.(\d+)\.(.*)$')
# mmpretrain names inside a block -> timm / Google's
_BLOCK_NAMES = (
    ('ln1.', 'norm1.'),
    ('ln2.', 'norm2.'),
    ('attn.qkv.', 'attn.qkv.'),
    ('attn.proj.', 'attn.proj.'),
    ('ffn.layers.0.0.', 'mlp.fc1.'),
    ('ffn.layers.1.', 'mlp.fc2.'),
)


def tiny_vit_kwargs(**overrides) -> dict:
    """Arguments of a tiny ``mmparax.ViT``.

    Width 32, 4 blocks of 2 heads, MLP width 128, patch 8 at 32 x 32 (a 4 x 4
    patch grid), ``featmap`` outputs of blocks 1 and 3 (so two block groups
    of 2), drop path 0.1: the layout of ViT-B/L with about 58k parameters.
    ``overrides`` replace or add arguments.
    """
    kwargs = dict(
        arch=dict(
            embed_dims=32,
            num_layers=4,
            num_heads=2,
            feedforward_channels=128),
        img_size=32,
        patch_size=8,
        out_type='featmap',
        out_indices=[1, 3],
        drop_path_rate=0.1)
    kwargs.update(overrides)
    return kwargs


def tiny_vit_state_dict(seed: int = 0,
                        random_all: bool = False,
                        **overrides) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain-layout state dict of a tiny ``mmparax.ViT``.

    Args:
        seed (int): Seed of the weights.
        random_all (bool): Draw every tensor from N(0, 1) (LayerNorms, class
            token and position embeddings included) so that any mix-up is
            visible. Otherwise Linear weights, the class token and the
            position embeddings are truncated normal (std 0.02, biases 0),
            LayerNorms 1 / 0, the patch conv PyTorch's default. Default:
            False.
        **overrides: Arguments replacing those of :func:`tiny_vit_kwargs`.

    Returns:
        OrderedDict: detached CPU tensors.
    """
    from mmparax.models.backbones.vit import ViT
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViT(**tiny_vit_kwargs(**overrides))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                _trunc_normal(module.weight, gen)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        for name in ('cls_token', 'pos_embed'):
            if getattr(model, name, None) is not None:
                _trunc_normal(getattr(model, name), gen)
        if random_all:
            for param in model.parameters():
                param.copy_(torch.randn(param.shape, generator=gen))
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items())


def _trunc_normal(tensor, gen, std=0.02):
    values = torch.randn(tensor.shape, generator=gen).clamp_(-2.0, 2.0)
    tensor.copy_(values * std)


def _backbone(state_dict: Dict) -> 'OrderedDict':
    if state_dict and all(k.startswith('backbone.') for k in state_dict):
        return OrderedDict(
            (k[len('backbone.'):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def vit_to_timm(state_dict: Dict[str, torch.Tensor],
                num_classes: Optional[int] = 21843,
                pre_logits: bool = False,
                seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain-layout ViT backbone -> the timm / Google release layout.

    The inverse of ``mmparax.models.backbones.vit.timm_to_mmpretrain`` on the
    backbone keys. The final norm ``ln1`` becomes ``norm`` (1 / 0 when the
    backbone has none); a classifier ``head.*`` [num_classes, C] (and with
    ``pre_logits`` the first release's ``pre_logits.fc.*`` [C, C]) is added.

    Args:
        state_dict (dict): mmpretrain layout, optionally under ``backbone.``,
            of a ViT with a class token. Adapter or other foreign keys raise
            ValueError.
        num_classes (int, optional): Classes of the head; None writes no
            head. Default: 21843 (ImageNet-21K).
        pre_logits (bool): Add ``pre_logits.fc.*``. Default: False.
        seed (int): Seed of the head weights. Default: 0.

    Returns:
        OrderedDict: timm / Google-layout tensors.
    """
    state_dict = _backbone(state_dict)
    if 'cls_token' not in state_dict:
        raise ValueError('the timm / Google layout has a class token: write '
                         'from a ViT with with_cls_token=True')
    out = OrderedDict()
    for key, value in state_dict.items():
        layer = _LAYER_KEY.match(key)
        if layer:
            index, name = layer.groups()
            new = next((f'blocks.{index}.{b}{name[len(a):]}'
                        for a, b in _BLOCK_NAMES if name.startswith(a)), None)
            if new is None:
                raise ValueError(f'{key}: not a ViT block parameter '
                                 '(adapters cannot be converted)')
            out[new] = value
        elif key in ('cls_token', 'pos_embed'):
            out[key] = value
        elif key.startswith('patch_embed.projection.'):
            out['patch_embed.proj.' + key.split('.')[-1]] = value
        elif key.startswith(('ln1.', 'pre_norm.')):
            continue  # below, in the release's order
        else:
            raise ValueError(f'{key}: not a parameter of an mmpretrain ViT '
                             'backbone (adapters and expert centers cannot '
                             'be converted)')
    if not any(k.startswith('blocks.') for k in out):
        raise ValueError('no layers.* keys: not an mmpretrain ViT state dict')
    width = state_dict['cls_token'].shape[-1]
    if 'pre_norm.weight' in state_dict:
        for part in ('weight', 'bias'):
            out[f'norm_pre.{part}'] = state_dict[f'pre_norm.{part}']
    out['norm.weight'] = state_dict.get('ln1.weight',
                                        torch.ones(width)).clone()
    out['norm.bias'] = state_dict.get('ln1.bias', torch.zeros(width)).clone()
    gen = torch.Generator().manual_seed(seed)
    if pre_logits:
        fc = torch.empty(width, width)
        _trunc_normal(fc, gen)
        out['pre_logits.fc.weight'] = fc
        out['pre_logits.fc.bias'] = torch.zeros(width)
    if num_classes is not None:
        head = torch.empty(num_classes, width)
        _trunc_normal(head, gen)
        out['head.weight'] = head
        out['head.bias'] = torch.zeros(num_classes)
    return out


def vit_to_mae(
        state_dict: Dict[str, torch.Tensor]
) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain-layout ViT backbone -> the MAE release layout
    (``mae_pretrain_vit_base.pth``): timm keys, final ``norm``, no head.
    Write it under ``'model'``
    (``mmparax.testing.write_checkpoint(path, sd, wrapper='model')``)."""
    return vit_to_timm(state_dict, num_classes=None)
