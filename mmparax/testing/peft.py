"""Helpers for tests of PEFT methods on host backbones: the table of tiny
hosts and small method settings every (method, host) check runs on."""
from typing import List

import torch
import torch.nn as nn

from mmparax.models import ConvNeXt, Swin, ViT, VMamba
from mmparax.peft import PEFTModule, build_peft_method
from mmparax.registry import PEFT_METHODS
from .checkpoints import tiny_swin_kwargs
from .convnext import tiny_convnext_kwargs
from .vit import tiny_vit_kwargs

# name: (class, tiny kwargs, input shape [B, 3, H, W])
HOSTS = {
    'Swin': (Swin, tiny_swin_kwargs(depths=(2, 2, 3, 2)), (2, 3, 75, 90)),
    'ConvNeXt': (ConvNeXt, tiny_convnext_kwargs(), (2, 3, 64, 48)),
    'VMamba': (VMamba,
               dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0),
                    drop_path_rate=0.1), (2, 3, 64, 56)),
    # featmap outputs of blocks 1 and 3: two block groups; a 5 x 7 patch grid
    'ViT': (ViT, tiny_vit_kwargs(), (2, 3, 40, 56)),
}
# Small widths of the methods whose defaults are too wide for the tiny hosts
# (no dropout: checks that run two models one after the other compare them).
SMALL = {
    'ParaX': dict(hidden_dim=8, router_hidden=4),
    'LoRA': dict(rank=4, alpha=8),
    'VPT': dict(num_tokens=3),
    'AdaptFormer': dict(hidden_dim=8, dropout=0.),
    'RepAdapter': dict(hidden_dim=8, dropout=0.),
    'LoRand': dict(hidden_dim=8, num_branches=2, branch_rank=2),
    'SNELL': dict(rank=4),
    'CoLoRA': dict(rank=4),
    'Mona': dict(hidden_dim=8, dropout=0.),
}


def method_settings(name: str) -> dict:
    """The config of the registered method ``name`` on the tiny hosts: its
    :data:`SMALL` widths, or its defaults."""
    return dict(type=name, **SMALL.get(name, {}))


def fits(method: str, host: str) -> bool:
    """Whether the host declares all that the registered method declares it
    needs."""
    return not build_peft_method(method_settings(method)).missing(
        HOSTS[host][0])


def hosts_of(method: str) -> List[str]:
    """The hosts of :data:`HOSTS` the registered method ``method`` fits."""
    return [h for h in HOSTS if fits(method, h)]


# Every method mmparax registers, at small widths; the (method, host) pairs
# that fit, and those that must be refused.
METHODS = {name: method_settings(name) for name in PEFT_METHODS.module_dict}
PAIRS = [(m, h) for m in METHODS for h in HOSTS if fits(m, h)]
UNFIT = [(m, h) for m in METHODS for h in HOSTS if not fits(m, h)]


def build_pair(host: str, peft=None, seed: int = 0, **overrides) -> nn.Module:
    """The tiny ``host`` of :data:`HOSTS` with ``peft`` (a method config or
    None), initialised from ``seed``; ``overrides`` replace host kwargs."""
    cls, kwargs, _ = HOSTS[host]
    torch.manual_seed(seed)
    return cls(peft=peft, **dict(kwargs, **overrides))


@torch.no_grad()
def switch_off(model: nn.Module) -> nn.Module:
    """Make every method module of ``model`` a no-op, in place, through
    :meth:`PEFTModule.switch_off` (e.g. ParaX adapters output 0, LoRA
    updates get ``B = 0``)."""
    for module in model.modules():
        if isinstance(module, PEFTModule):
            module.switch_off()
    return model


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 1) -> nn.Module:
    """Add random values (std 0.05) to every trainable parameter, in place,
    so that zero-initialised ones (LoRA's B, ...) act.

    Every stage of the :data:`HOSTS` has two blocks or more: with one expert
    (M = 1) ParaX's router softmax is constant and its gradient exactly 0.
    """
    torch.manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * 0.05)
    return model


def float16_method(method: str) -> dict:
    """:data:`METHODS` settings of ``method``; ParaX with the recipes'
    float16 adapters (``force_fp16``; on the CPU only with
    ``$MMPARAX_FORCE_FP16_ON_CPU=1``)."""
    peft = dict(METHODS[method])
    if method == 'ParaX':
        peft['force_fp16'] = True
    return peft


def float16_forward_backward(method: str, host: str,
                             device: str = 'cpu') -> float:
    """Forward and backward of the (method, host) pair under float16
    autocast on ``device``; raise ``AssertionError`` on a non-finite output
    or gradient, a trainable parameter without a float32 gradient or a
    frozen one with a gradient.

    Returns:
        float: the largest relative error (L2) of an output against the same
        model in float32 (two twins: CoLoRA's updates depend on the last
        forward).
    """
    model, twin = (perturb(
        build_pair(host, float16_method(method),
                   drop_path_rate=0.0)).to(device) for _ in range(2))
    torch.manual_seed(0)
    x = torch.randn(*HOSTS[host][2], device=device)
    with torch.no_grad():
        fp32 = twin(x)
    with torch.autocast(device.split(':')[0], dtype=torch.float16):
        outs = model(x)
    errors = []
    for i, (out, ref) in enumerate(zip(outs, fp32)):
        assert out.dtype in (torch.float16, torch.float32), (i, out.dtype)
        assert torch.isfinite(out).all(), f'output {i} is not finite'
        errors.append(((out.float() - ref).norm() / ref.norm()).item())
    sum(o.float().square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f'{name}: no gradient'
            assert p.grad.dtype == torch.float32, f'{name}: {p.grad.dtype}'
            assert torch.isfinite(p.grad).all(), f'{name}: not finite'
        else:
            assert p.grad is None, f'{name}: frozen, has a gradient'
    return max(errors)
