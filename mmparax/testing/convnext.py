"""ConvNeXt checkpoints in the key layouts of the official releases.

mmpretrain layout (what ``mmparax.ConvNeXt`` holds)::

    downsample_layers.0.0.weight          [C_0, 3, 4, 4]   stem conv
    downsample_layers.0.1.weight          [C_0]            stem LayerNorm
    downsample_layers.i.0.weight          [C_{i-1}]        LayerNorm
    downsample_layers.i.1.weight          [C_i, C_{i-1}, 2, 2]
    stages.i.j.depthwise_conv.weight      [C_i, 1, 7, 7]
    stages.i.j.norm.weight                [C_i]
    stages.i.j.pointwise_conv1.weight     [4C_i, C_i]
    stages.i.j.pointwise_conv2.weight     [C_i, 4C_i]
    stages.i.j.gamma                      [C_i]
    norm<i>.weight                        [C_i]            output norms

Facebook layout (``convnext_*_22k_224.pth``, weights under ``'model'``):
the same with ``dwconv`` / ``pwconv1`` / ``pwconv2`` in the blocks, no
output norms, and the classifier's ``norm.*`` [C_last] and ``head.*``
[num_classes, C_last].
"""
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn


def tiny_convnext_kwargs(**overrides) -> dict:
    """Arguments of a tiny ``mmparax.ConvNeXt`` / ``mmparax.ParaXConvNeXt``.

    Widths (16, 32, 64, 128), depths (2, 2, 2, 2), the layout of ConvNeXt-T/B/L
    with about 0.5M parameters. ``overrides`` replace or add arguments.
    """
    kwargs = dict(
        arch=dict(depths=[2, 2, 2, 2], channels=[16, 32, 64, 128]),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        layer_scale_init_value=1.0)
    kwargs.update(overrides)
    return kwargs


def tiny_convnext_state_dict(seed: int = 0,
                             random_all: bool = False,
                             **overrides) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain-layout state dict of a tiny ``mmparax.ConvNeXt``.

    Args:
        seed (int): Seed of the weights.
        random_all (bool): Draw every tensor from N(0, 1) (LayerNorms and
            layer scales included) so that any mix-up is visible. Otherwise
            Linear / Conv weights are truncated normal (std 0.02, biases 0),
            LayerNorms 1 / 0 and layer scales 1. Default: False.
        **overrides: Arguments replacing those of :func:`tiny_convnext_kwargs`.

    Returns:
        OrderedDict: detached CPU tensors, output norms ``norm<i>`` included.
    """
    from mmparax.models.backbones import ConvNeXt
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvNeXt(**tiny_convnext_kwargs(**overrides))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                values = torch.randn(module.weight.shape, generator=gen)
                module.weight.copy_(values.clamp_(-2.0, 2.0) * 0.02)
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        if random_all:
            for param in model.parameters():
                param.copy_(torch.randn(param.shape, generator=gen))
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items())


def convnext_to_facebook(state_dict: Dict[str, torch.Tensor],
                         num_classes: Optional[int] = 1000,
                         seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain-layout ConvNeXt backbone -> official Facebook layout.

    The inverse of ``mmparax.models.backbones.convnext.facebook_to_mmpretrain``
    on the backbone keys. The output norms ``norm<i>`` of the dense backbone
    are not in released files: the last one becomes the classifier's
    ``norm.*`` (1 / 0 when absent), the others are dropped; a classifier
    ``head.*`` [num_classes, C_last] is added.

    Args:
        state_dict (dict): mmpretrain layout, optionally under ``backbone.``.
            Adapter or other foreign keys raise ValueError.
        num_classes (int, optional): Classes of the head; None writes no
            head. Default: 1000 (the IN-22K files have 21841).
        seed (int): Seed of the head weights. Default: 0.

    Returns:
        OrderedDict: Facebook-layout tensors.
    """
    if state_dict and all(k.startswith('backbone.') for k in state_dict):
        state_dict = OrderedDict(
            (k[len('backbone.'):], v) for k, v in state_dict.items())
    out, norms = OrderedDict(), {}
    renames = (('.depthwise_conv.', '.dwconv.'),
               ('.pointwise_conv1.', '.pwconv1.'),
               ('.pointwise_conv2.', '.pwconv2.'))
    for key, value in state_dict.items():
        parts = key.split('.')
        if key.startswith('downsample_layers.'):
            out[key] = value
        elif key.startswith('stages.') and len(parts) >= 4 and \
                parts[3] in ('depthwise_conv', 'norm', 'pointwise_conv1',
                             'pointwise_conv2', 'gamma'):
            for old, new in renames:
                key = key.replace(old, new)
            out[key] = value
        elif parts[0].startswith('norm') and parts[0][4:].isdigit():
            norms.setdefault(int(parts[0][4:]), {})[parts[1]] = value
        else:
            raise ValueError(f'{key}: not a parameter of a ConvNeXt backbone '
                             '(adapters and expert centers cannot be '
                             'converted)')
    stages = {int(k.split('.')[1]) for k in out if k.startswith('stages.')}
    if not stages:
        raise ValueError('no stages.* keys: not a ConvNeXt state dict')
    last = max(stages)
    width = out[f'stages.{last}.0.norm.weight'].shape[0]
    final = norms.get(last, {})
    out['norm.weight'] = final.get('weight', torch.ones(width)).clone()
    out['norm.bias'] = final.get('bias', torch.zeros(width)).clone()
    if num_classes is not None:
        gen = torch.Generator().manual_seed(seed)
        head = torch.randn(num_classes, width, generator=gen).clamp_(-2, 2)
        out['head.weight'] = head * 0.02
        out['head.bias'] = torch.zeros(num_classes)
    return out
