r"""AdaptFormer: a bottleneck MLP parallel to the frozen MLP branch.

Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual
Recognition", NeurIPS 2022; official code
https://github.com/ShoufaChen/AdaptFormer (``models/adapter.py``).

.. math::

    x_{out} = x + \mathrm{MLP}(\mathrm{LN}(x)) + s\,\big(W_{up}\,
        \mathrm{dropout}(\mathrm{ReLU}(W_{down} x + b_{down})) + b_{up}\big),
    \qquad W_{down} \in \mathbb{R}^{d \times C},\
    W_{up} \in \mathbb{R}^{C \times d}

on Swin and VMamba, where ``x`` [B, H*W, C] is the block's stream before
``norm2`` (the adapter has no norm of its own); on ConvNeXt the adapter reads
the block input and its output is added to the block output. ``W_down``
starts from Kaiming-uniform (a = sqrt(5)), ``W_up`` and both biases from
zero, so the adapted model starts as the frozen one. ``2Cd + d + C``
parameters per block.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmparax.registry import PEFT_METHODS
from .base import (
    PARALLEL_SITES,
    PEFTMethod,
    PEFTModule,
    check_fraction,
    check_number,
    check_positive_int,
)


class AdaptFormerAdapter(PEFTModule):
    """``s * up(dropout(relu(down(x))))`` on tokens.

    Args:
        dim (int): Channels C.
        hidden_dim (int): Bottleneck width d.
        scale (float): s. Default: 0.1.
        dropout (float): Dropout after the ReLU. Default: 0.1.
        parallel (bool): Return the delta only (parallel sites, whose host
            adds it to the block output); False: ``x + delta`` (sequential
            sites). Default: True.

    Parameters: ``down`` (weight [d, C], bias [d]), ``up`` (weight [C, d],
    bias [C]).
    """

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 scale: float = 0.1,
                 dropout: float = 0.1,
                 parallel: bool = True):
        super().__init__()
        self.scale, self.parallel = float(scale), parallel
        self.down = nn.Linear(dim, hidden_dim)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden_dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @torch.no_grad()
    def switch_off(self):
        self.up.weight.zero_()
        self.up.bias.zero_()

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C] (the delta at a parallel site)."""
        delta = self.up(self.dropout(self.act(self.down(x)))) * self.scale
        return delta if self.parallel else x + delta

    def extra_repr(self):
        return f'scale={self.scale}, parallel={self.parallel}'


@PEFT_METHODS.register_module()
class AdaptFormer(PEFTMethod):
    """AdaptFormer: one :class:`AdaptFormerAdapter` per block.

    Placement: ``mlp_parallel`` on Swin and VMamba (input: the stream before
    ``norm2``; output added to the block output, no drop path, as in the
    official ``Block``); ``block_parallel`` on ConvNeXt (input: the block
    input; output added to the block output), ConvNeXt's block being a
    single (depthwise conv + MLP) branch. Another site holds a sequential
    adapter (``x + delta``).

    The defaults are the official image recipe: ``ffn_num=64``,
    ``ffn_adapter_scalar=0.1``, ``ffn_adapter_init_option='lora'``, no
    adapter LayerNorm, dropout 0.1 (``Block`` passes 0.1; the ``Adapter``
    class default is 0). The official code adapts ViTs only: the Swin,
    ConvNeXt and VMamba placements are ours, and ``configs/adaptformer``
    uses the widths that give the ParaX paper's # P (d = 224 Swin, 176
    ConvNeXt, 242 VMamba-B).

    Args:
        hidden_dim (int): Bottleneck width d. Default: 64.
        scale (float): Output scale s. Default: 0.1.
        dropout (float): Dropout after the ReLU. Default: 0.1.
        sites (Sequence[str], optional): Block sites; None: the first of
            ``('mlp_parallel',)``, ``('block_parallel',)`` the host offers.
    """

    # the official ViT adapts every token (custom_modules.py, Block)
    adapts_class_token = True
    default_sites = (('mlp_parallel', ), ('block_parallel', ))
    width_setting = 'hidden_dim'

    def __init__(self,
                 hidden_dim: int = 64,
                 scale: float = 0.1,
                 dropout: float = 0.1,
                 sites: Optional[Sequence[str]] = None):
        super().__init__(sites)
        check_positive_int(self.name, 'hidden_dim', hidden_dim)
        check_number(self.name, 'scale', scale, ' (official: 0.1)')
        check_fraction(self.name, 'dropout', dropout)
        self.hidden_dim, self.scale, self.dropout = hidden_dim, scale, dropout

    def attach(self, host) -> None:
        self.add_site_modules(
            host, lambda dim, site, _: AdaptFormerAdapter(
                dim, self.hidden_dim, self.scale, self.dropout,
                parallel=site in PARALLEL_SITES))
