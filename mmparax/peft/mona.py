r"""Mona: the multi-cognitive visual adapter.

Yin et al., "5%>100%: Breaking Performance Shackles of Full Fine-Tuning on
Visual Recognition Tasks", CVPR 2025; official code
https://github.com/Leiyi-Hu/mona (``Mona`` and ``MonaOp`` in the mmdet /
mmseg ``swin_transformer_mona.py`` backbones).

.. math::

    \hat{x} &= \gamma \odot \mathrm{LN}(x) + \gamma_x \odot x, \qquad
        z = W_1 \hat{x} + b_1 \in \mathbb{R}^{r}, \\
    z' &= z + \tfrac{1}{3}\big(\mathrm{DW}_3(z) + \mathrm{DW}_5(z)
        + \mathrm{DW}_7(z)\big), \qquad z'' = z' + P z' + b_P, \\
    y &= x + W_2\,\mathrm{dropout}(\mathrm{GELU}(z'')) + b_2

on tokens ``x`` [B, H*W, C] laid out as an H x W map for the depthwise
k x k convolutions ``DW_k`` (with bias) and the 1x1 convolution ``P`` of the
r-channel bottleneck; ``W_1`` is [r, C], ``W_2`` [C, r]. As in the official
backbones, ``W_1`` and ``W_2`` start from a truncated normal (std 0.02) with
zero biases, ``gamma`` at 1e-6, ``gamma_x`` at 1, the LayerNorm at (1, 0) and
the convolutions at PyTorch's default init, so the adapter does not start as
an identity. ``2Cr + 5C + r^2 + 88r`` parameters per adapter.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import (
    PARALLEL_SITES,
    PEFTMethod,
    PEFTModule,
    check_fraction,
    check_positive_int,
)

KERNEL_SIZES = (3, 5, 7)


class MonaOp(nn.Module):
    """Multi-scale depthwise mixing of the bottleneck, on [B, r, H, W] maps:
    the average of 3x3, 5x5 and 7x7 depthwise convs plus the input, then a
    1x1 conv plus its input.

    Args:
        channels (int): Bottleneck width r.
    """

    def __init__(self, channels: int):
        super().__init__()
        for i, k in enumerate(KERNEL_SIZES, 1):
            self.add_module(
                f'conv{i}',
                nn.Conv2d(channels, channels, k, padding=k // 2,
                          groups=channels))
        self.projector = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = (self.conv1(x) + self.conv2(x) + self.conv3(x)) / 3.0 + x
        return mixed + self.projector(mixed)


class MonaAdapter(PEFTModule):
    """One Mona adapter on tokens; see the module docstring.

    Args:
        dim (int): Channels C.
        hidden_dim (int): Bottleneck width r.
        dropout (float): Dropout after the GELU. Default: 0.1.
        parallel (bool): Return the delta only (parallel sites, whose host
            adds it to the block output); False: ``x + delta``. Default:
            False.

    Parameters (the official names): ``norm`` (LayerNorm(C)), ``gamma`` [C],
    ``gammax`` [C], ``project1`` (Linear C -> r), ``adapter_conv``
    (:class:`MonaOp`), ``project2`` (Linear r -> C).
    """

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 dropout: float = 0.1,
                 parallel: bool = False):
        super().__init__()
        self.parallel = parallel
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(torch.empty(dim))
        self.gammax = nn.Parameter(torch.empty(dim))
        self.project1 = nn.Linear(dim, hidden_dim)
        self.adapter_conv = MonaOp(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.project2 = nn.Linear(hidden_dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.norm.reset_parameters()
        self.gamma.fill_(1e-6)
        self.gammax.fill_(1.0)
        for linear in (self.project1, self.project2):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        for conv in self.adapter_conv.children():
            conv.reset_parameters()

    @torch.no_grad()
    def switch_off(self):
        self.project2.weight.zero_()
        self.project2.bias.zero_()

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """x: [B, H*W, C] -> [B, H*W, C] (the delta at a parallel site)."""
        B, L, _ = x.shape
        H, W = hw_shape
        z = self.project1(self.norm(x) * self.gamma + x * self.gammax)
        z = z.transpose(1, 2).reshape(B, -1, H, W)
        z = self.adapter_conv(z).flatten(2).transpose(1, 2)
        delta = self.project2(self.dropout(F.gelu(z)))
        return delta if self.parallel else x + delta

    def extra_repr(self):
        return f'parallel={self.parallel}' if self.parallel else ''


@PEFT_METHODS.register_module()
class Mona(PEFTMethod):
    """Mona: a :class:`MonaAdapter` after every residual add.

    Placement, as the official Swin backbones (``my_module_1`` after the
    attention residual, ``my_module_2`` after the MLP residual): the
    ``post_attn`` and ``post_mlp`` sites on Swin, ``post_ssm`` and
    ``post_mlp`` on VMamba, ``post_block`` on ConvNeXt (one per block, the
    block being a single residual branch). A parallel site gets an adapter
    that returns its delta only.

    The official width is r = 64 with dropout 0.1; the ParaX paper's
    comparison uses larger widths (r = 90 on Swin, 144 on ConvNeXt).

    Args:
        hidden_dim (int): Bottleneck width r. Default: 64.
        dropout (float): Dropout after the GELU. Default: 0.1.
        sites (Sequence[str], optional): Block sites; None: every site after
            a residual add of the host.
    """

    default_sites = ('residual', )
    width_setting = 'hidden_dim'

    def __init__(self,
                 hidden_dim: int = 64,
                 dropout: float = 0.1,
                 sites: Optional[Sequence[str]] = None):
        super().__init__(sites)
        check_positive_int(self.name, 'hidden_dim', hidden_dim,
                           ' (official: 64)')
        check_fraction(self.name, 'dropout', dropout, hint=' (official: 0.1)')
        self.hidden_dim, self.dropout = hidden_dim, float(dropout)

    def attach(self, host) -> None:
        self.add_site_modules(
            host, lambda dim, site, _: MonaAdapter(
                dim, self.hidden_dim, self.dropout,
                parallel=site in PARALLEL_SITES))
