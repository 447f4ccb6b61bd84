r"""LoRand: bottleneck adapters whose projections are low-rank syntheses.

Yin et al., "1% VS 100%: Parameter-Efficient Low Rank Adapter for Dense
Predictions", CVPR 2023. The paper links no code; the first author's own
implementation is ``Lorand`` / ``Lorand_Multi`` in
https://github.com/DongshuoYin/CoLin
(``MMDetection/mmdet/models/backbones/swin_lorand.py``), which this follows.

.. math::

    W_{down} = \sum_{i=1}^{\alpha} P_i K_i Q_i,\qquad
    W_{up} = \sum_{i=1}^{\alpha} P'_i K'_i Q'_i,\qquad
    y = x + \mathrm{GELU}(x W_{down} + b_{down})\,W_{up} + b_{up}

with ``x`` [B, H*W, C], ``P_i`` [C, beta], ``K_i`` [beta, beta], ``Q_i``
[beta, n] (down, C -> n) and ``P'_i`` [n, beta], ``K'_i`` [beta, beta],
``Q'_i`` [beta, C] (up, n -> C): alpha branches of rank beta per projection,
no factor shared between the two projections. Every factor starts, slice by
slice, from Kaiming-uniform (a = sqrt(5)) and each bias from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the official code: the adapter
does not start as an identity. ``2 alpha beta (C + n) + 2 alpha beta^2 + n +
C`` parameters per adapter.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import PARALLEL_SITES, PEFTMethod, PEFTModule, check_positive_int


class LoRandProjection(nn.Module):
    """``x W + b`` with ``W = sum_i P_i K_i Q_i`` (in -> out).

    Args:
        in_features (int): Inputs.
        out_features (int): Outputs.
        num_branches (int): alpha.
        branch_rank (int): beta.

    Parameters: ``P`` [alpha, in, beta], ``K`` [alpha, beta, beta], ``Q``
    [alpha, beta, out], ``bias`` [out].
    """

    def __init__(self, in_features: int, out_features: int,
                 num_branches: int, branch_rank: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.P = nn.Parameter(
            torch.empty(num_branches, in_features, branch_rank))
        self.K = nn.Parameter(
            torch.empty(num_branches, branch_rank, branch_rank))
        self.Q = nn.Parameter(
            torch.empty(num_branches, branch_rank, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # per branch, as the official [in, beta] / [beta, beta] / [beta, out]
        # matrices (fan_in of each is its second dimension)
        for factor in (self.P, self.K, self.Q):
            for branch in factor:
                nn.init.kaiming_uniform_(branch, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def weight(self) -> torch.Tensor:
        """The synthesised [in, out] matrix ``sum_i P_i K_i Q_i``."""
        return torch.matmul(torch.matmul(self.P, self.K), self.Q).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight().t(), self.bias)

    def extra_repr(self):
        alpha, _, beta = self.P.shape
        return (f'in_features={self.in_features}, out_features='
                f'{self.out_features}, num_branches={alpha}, '
                f'branch_rank={beta}')


class LoRandAdapter(PEFTModule):
    """``x + up(GELU(down(x)))`` with :class:`LoRandProjection` layers.

    Args:
        dim (int): Channels C.
        hidden_dim (int): Bottleneck width n.
        num_branches (int): alpha.
        branch_rank (int): beta.
        parallel (bool): Return the delta only (parallel sites, whose host
            adds it to the block output); False: ``x + delta``. Default:
            False.
    """

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 num_branches: int,
                 branch_rank: int,
                 parallel: bool = False):
        super().__init__()
        self.parallel = parallel
        self.down = LoRandProjection(dim, hidden_dim, num_branches,
                                     branch_rank)
        self.up = LoRandProjection(hidden_dim, dim, num_branches,
                                   branch_rank)

    @torch.no_grad()
    def reset_parameters(self):
        self.down.reset_parameters()
        self.up.reset_parameters()

    @torch.no_grad()
    def switch_off(self):
        self.up.Q.zero_()
        self.up.bias.zero_()

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C] (the delta at a parallel site)."""
        delta = self.up(F.gelu(self.down(x)))
        return delta if self.parallel else x + delta

    def extra_repr(self):
        return f'parallel={self.parallel}' if self.parallel else ''


@PEFT_METHODS.register_module()
class LoRand(PEFTMethod):
    """LoRand: two :class:`LoRandAdapter` per block.

    Placement, as the official Swin (``x = s + A(attn(norm1(s)))``): on the
    output of the attention / SS2D branch and of the MLP branch, before
    their residual adds (``attn_out`` / ``ssm_out`` and ``mlp_out`` on Swin
    and VMamba). ConvNeXt has one residual branch: the two adapters per
    block (the budget of the ParaX paper's LoRand rows, see
    ``configs/lorand``) sit on its input and after the block (``pre_dwconv``
    and ``post_block``; our choice, the official code has no ConvNeXt). A
    parallel site gets an adapter that returns its delta only.

    The official defaults are alpha = 4 branches of rank beta = 8 and a
    bottleneck n = C / 2; the ParaX paper's comparison fits n = 128 and
    alpha * beta = 96 (Swin, VMamba) or 72 (ConvNeXt).

    Args:
        hidden_dim (int, optional): Bottleneck width n; None: C // 2 in every
            stage (official). Default: None.
        num_branches (int): alpha. Default: 4.
        branch_rank (int): beta. Default: 8.
        sites (Sequence[str], optional): Block sites; None: the first of
            ``('attn_out', 'mlp_out')``, ``('ssm_out', 'mlp_out')``,
            ``('pre_dwconv', 'post_block')`` the host offers.
    """

    # token-wise, as the official token-wise ViT adapters: every token
    adapts_class_token = True
    width_setting = 'hidden_dim'
    default_sites = (('attn_out', 'mlp_out'), ('ssm_out', 'mlp_out'),
                     ('pre_dwconv', 'post_block'))

    def __init__(self,
                 hidden_dim: Optional[int] = None,
                 num_branches: int = 4,
                 branch_rank: int = 8,
                 sites: Optional[Sequence[str]] = None):
        super().__init__(sites)
        if hidden_dim is not None:
            check_positive_int(self.name, 'hidden_dim', hidden_dim,
                               ' or None (C // 2)')
        check_positive_int(self.name, 'num_branches (alpha)', num_branches)
        check_positive_int(self.name, 'branch_rank (beta)', branch_rank)
        self.hidden_dim = hidden_dim
        self.num_branches, self.branch_rank = num_branches, branch_rank

    def attach(self, host) -> None:

        def build(dim, site, stage):
            hidden = dim // 2 if self.hidden_dim is None else self.hidden_dim
            if hidden < 1:
                raise ValueError(
                    f'LoRand: stage {stage} of {type(host).__name__} has '
                    f'{dim} channels, too few for a C // 2 bottleneck; give '
                    'hidden_dim')
            return LoRandAdapter(dim, hidden, self.num_branches,
                                 self.branch_rank,
                                 parallel=site in PARALLEL_SITES)

        self.add_site_modules(host, build)
