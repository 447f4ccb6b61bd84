"""Checkpoints in the key layout of the ParaX reference code (OpenMMLab 1.x).

:func:`mmparax_to_reference` writes the tensors of one of our ParaX models
the way the reference's ``SwinParaX``, ``convnext_*_parax`` and
``Backbone_VSSM`` (VMamba) save them, so the converter
(:mod:`mmparax.utils.reference_converter`) can be tested without the
reference's files. It is written independently of the converter::

    ours                                   reference
    expert_centers.<i>.0.down              peft_params.<i>.projA_params
    expert_centers.<i>.0.up                peft_params.<i>.projB_params
    expert_centers.<i>.0.kernels.<k>x<k>   peft_params.<i>.conv<k>x<k>_params
    <adapter>.scale_attn.*                 <adapter>.attn.0.*
    <adapter>.cascade_scale                <adapter>.conv_res_scale
    (nothing)                              <adapter>.logit_scale  (zeros)
    Swin     norm<i>.*, stages.*           extra_norm<i>.*, Microsoft layers.*
    ConvNeXt norm<i>.*, mmpretrain stages  extra_norm.<i>.*, Facebook stages
    VMamba   outnorm<i>.*                  outnorm<i>.*  (everything else too)

Single-kernel adapters get the reference's unused ``attn.0`` (a
``Linear(hidden_dim, 1)``) and its empty ``conv_res_scale``.
"""
import re
from collections import OrderedDict
from typing import Dict

import torch

from .checkpoints import swin_to_microsoft
from .convnext import convnext_to_facebook

_CENTER = re.compile(r'^expert_centers\.(\d+)\.(\d+)\.(.+)$')
_ADAPTERS = dict(
    swin=re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.(adapter[12])\.(.+)$'),
    convnext=re.compile(r'^stages\.(\d+)\.(\d+)\.(adapter)\.(.+)$'),
    vmamba=re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(adapter[12])\.(.+)$'))
_NORMS = dict(
    swin=re.compile(r'^norm(\d+)\.(.+)$'),
    convnext=re.compile(r'^norm(\d+)\.(.+)$'),
    vmamba=re.compile(r'^outnorm(\d+)\.(.+)$'))
_PART_NAMES = {'scale_attn': 'attn.0', 'cascade_scale': 'conv_res_scale'}


def _adapter_prefix(backbone: str, i: str, j: str, name: str) -> str:
    if backbone == 'convnext':
        return f'stages.{i}.{j}.adapter.'
    return f'layers.{i}.blocks.{j}.{name}.'


def _norm_key(backbone: str, i: str, rest: str) -> str:
    if backbone == 'swin':
        return f'extra_norm{i}.{rest}'
    if backbone == 'convnext':
        return f'extra_norm.{i}.{rest}'
    return f'outnorm{i}.{rest}'


def _expert_name(name: str) -> str:
    if name == 'down':
        return 'projA_params'
    if name == 'up':
        return 'projB_params'
    if name.startswith('kernels.'):
        return f'conv{name[len("kernels."):]}_params'
    raise ValueError(f'expert center tensor {name!r} has no reference name')


def mmparax_to_reference(state_dict: Dict[str, torch.Tensor],
                         backbone: str,
                         classifier: bool = False,
                         attn_mask: bool = False,
                         seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """State dict of an mmparax ParaX backbone -> the reference layout.

    Args:
        state_dict (dict): ``mmparax.Swin`` / ``ConvNeXt`` / ``VMamba`` with
            ParaX, one center per stage. A whole segmentor's or detector's
            (``backbone.`` keys) keeps its other keys unchanged.
        backbone (str): ``'swin'``, ``'convnext'`` or ``'vmamba'``.
        classifier (bool): Add an ImageNet classifier (``head.*`` and
            ``norm.*``; VMamba ``classifier.*``), as a checkpoint mixed with
            the ImageNet weights has. Default: False.
        attn_mask (bool): Add Swin's precomputed ``attn_mask`` buffers.
            Default: False.
        seed (int): Seed of the tensors that ours lack (the unused
            single-kernel ``attn.0``, the classifier head).

    Returns:
        OrderedDict: Reference-layout tensors.
    """
    if backbone not in _ADAPTERS:
        raise ValueError(f'unknown backbone {backbone!r}')
    if any(k.startswith('backbone.') for k in state_dict):
        body = OrderedDict((k[len('backbone.'):], v)
                           for k, v in state_dict.items()
                           if k.startswith('backbone.'))
        out = OrderedDict(
            ('backbone.' + k, v) for k, v in mmparax_to_reference(
                body, backbone, classifier, attn_mask, seed).items())
        out.update((k, v) for k, v in state_dict.items()
                   if not k.startswith('backbone.'))
        return out

    gen = torch.Generator().manual_seed(seed)
    frozen, adapters, norms = OrderedDict(), OrderedDict(), OrderedDict()
    kernel_banks, out = {}, OrderedDict()
    for key, value in state_dict.items():
        center = _CENTER.match(key)
        adapter = _ADAPTERS[backbone].match(key)
        norm = _NORMS[backbone].match(key)
        if center:
            stage, group, name = center.groups()
            if group != '0':
                raise ValueError(f'{key}: the reference has one center per '
                                 'stage (blocks_per_center=None)')
            out[f'peft_params.{stage}.{_expert_name(name)}'] = value
            if name.startswith('kernels.'):
                kernel_banks[stage] = kernel_banks.get(stage, 0) + 1
        elif adapter:
            adapters.setdefault(adapter.groups()[:3],
                                OrderedDict())[adapter.group(4)] = value
        elif norm:
            norms[_norm_key(backbone, *norm.groups())] = value
        else:
            frozen[key] = value

    if backbone == 'swin':
        body = swin_to_microsoft(
            frozen, num_classes=1000 if classifier else None,
            attn_mask=attn_mask, seed=seed)
    elif backbone == 'convnext':
        body = convnext_to_facebook(
            frozen, num_classes=1000 if classifier else None, seed=seed)
    else:
        body = OrderedDict(frozen)
        if classifier:
            width = next(v for k, v in reversed(list(norms.items()))
                         if k.endswith('.weight')).shape[0]
            body['classifier.norm.weight'] = torch.ones(width)
            body['classifier.norm.bias'] = torch.zeros(width)
            body['classifier.head.weight'] = torch.randn(
                1000, width, generator=gen) * 0.02
            body['classifier.head.bias'] = torch.zeros(1000)
    if not classifier:
        for key in [k for k in body if k.startswith('norm.')]:
            del body[key]  # swin_to_microsoft / convnext_to_facebook add it

    for (i, j, name), parts in adapters.items():
        prefix = _adapter_prefix(backbone, i, j, name)
        hidden_dim = parts['proj.weight'].shape[0]
        banks = kernel_banks.get(i, 0)
        for part, value in parts.items():
            module, _, rest = part.partition('.')
            ref = _PART_NAMES.get(module, module)
            out[prefix + (f'{ref}.{rest}' if rest else ref)] = value
        if banks == 1:
            # the reference's unused scale attention and empty cascade scale
            out[prefix + 'attn.0.weight'] = torch.randn(
                1, hidden_dim, generator=gen) * 0.02
            out[prefix + 'attn.0.bias'] = torch.zeros(1)
            out[prefix + 'conv_res_scale'] = torch.ones(0)
        elif banks > 1 and 'scale_attn.weight' not in parts:
            raise ValueError(f'{prefix}: the reference always has scale '
                             'attention with several kernel sizes')
        out[prefix + 'logit_scale'] = torch.zeros(2 + banks)
    out.update(norms)
    body.update(out)
    return body
