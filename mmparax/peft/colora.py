r"""CoLoRA: correlated low-rank adaptation for ConvNets (Ran et al., NeurIPS
2025).

Each ConvNeXt block (C channels, hidden width H = 4C) gets a low-rank conv
branch beside its depthwise conv and correlated low-rank updates of its two
pointwise linears. With rank r, shared rank ``r_s = floor(ρ r)`` and
independent rank ``r_i = r - r_s``:

.. math::

    \mathrm{dw}'(x) = \mathrm{dw}(x) + B_c \ast \big(u + \lambda F(u)\big),
    \qquad u = A_c x,

.. math::

    \Delta W_1 = \frac{\bar W_2^\top B_s A_s}
        {\kappa\,(\sigma(\bar W_2^\top B_s) + \sigma(A_s))}
      + \frac{B_1 A_1}{\sqrt{r_i}\,(\sigma(A_1) + \sigma(B_1))},\qquad
    \Delta W_2 = \frac{B_s A_s \bar W_1^\top}
        {\kappa\,(\sigma(A_s \bar W_1^\top) + \sigma(B_s))}
      + \frac{B_2 A_2}{\sqrt{r_i}\,(\sigma(A_2) + \sigma(B_2))},

and ``fc_k(x) = (W_k + ΔW_k) x + b_k``. ``A_c`` [r, C] is a 1x1 conv, ``B_c``
a 3x3 conv with r groups (r -> C), ``κ = (r_s C)^{1/4}``, ``σ`` the standard
deviation of all entries (unbiased). The shared pair ``A_s`` [r_s, C],
``B_s`` [C, r_s] correlates the two layers through the other layer's
weight: ``W̄_k`` is the weight layer k used in the previous forward (frozen
plus its update, no gradient), the pretrained ``W_k`` at the first forward,
as the official code keeps it. ``F`` is the parameter-free filter of the
official code with ``λ = 0.2``: per map and channel,
``γ = π / (2 (max u - min u))``, ``c = max(cos γu, 0)``,
``s = max(sin γu, 0)`` (no gradient), ``G`` a normalised 11x11 Gaussian
(σ = 1) and reflect padding:

.. math::

    F(u) = \frac{c \cdot G \ast (c\,u) + s \cdot G \ast (s\,u)}
                {c \cdot G \ast c + s \cdot G \ast s + 10^{-5}}.

The ``B`` matrices start at zero, the ``A`` matrices from Kaiming-uniform
(a = sqrt(5)): the adapted model starts as the frozen one.

Placement (ConvNeXt only): the conv branch is the child ``colora`` of the
block's ``depthwise_conv`` (input: the block input), the correlated pair the
child ``colora`` of ``pointwise_conv1`` and acts on both pointwise layers,
through forward hooks. Per block ``r C + 9 C`` (conv branch) and
``2 r_s C + 2 r_i (C + H)`` (pointwise) parameters: ``(7 r + 9) C`` for an
even r with H = 4C.

Differences from the official code: the rank is given per block or per
stage (the official r = C // 16; the configs' ranks fit the ParaX paper's
# P); the official detection script also trains every bias and LayerNorm of
the backbone, here only the CoLoRA modules train; without autocast the
filter runs in float32 (the official forces fp16 autocast on CUDA even
then; under mixed precision both run it under float16 autocast and the
pointwise layers, updates included, in float32) and pads
maps of 5 pixels or fewer by periodic reflection (``F.pad``'s reflect mode,
the official padding, refuses them).

Paper: https://openreview.net/forum?id=3pF7rt9fQM; code:
https://github.com/VISION-SJTU/CoLoRA
(``object_detection/backbone/convnext_colora.py``; the repository releases
the COCO code only).
"""
import math
from functools import partial
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import (
    LayerUpdate,
    LowRankInit,
    PEFTMethod,
    check_fraction,
    check_positive,
    is_positive_int,
    per_stage,
)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """[size, size] normalised Gaussian window (float32)."""
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-grid**2 / (2 * sigma**2))
    window = line[:, None] @ line[None, :]
    return window / window.sum()


def _reflect_index(n: int, pad: int, device) -> torch.Tensor:
    index = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * n - 2
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``F.pad(x, (pad,) * 4, mode='reflect')``; maps smaller than
    ``pad + 1`` (which ``F.pad`` refuses) are reflected periodically."""
    H, W = x.shape[-2:]
    if pad < H and pad < W:
        return F.pad(x, (pad, ) * 4, mode='reflect')
    x = x.index_select(-2, _reflect_index(H, pad, x.device))
    return x.index_select(-1, _reflect_index(W, pad, x.device))


def bilateral_filter(u: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """F(u) of the module docstring: u [B, r, H, W], window [k, k]."""
    channels, pad = u.shape[1], window.shape[-1] // 2
    span = (u.amax(dim=(-2, -1), keepdim=True) -
            u.amin(dim=(-2, -1), keepdim=True)).clamp(min=1e-5)
    phase = (math.pi / (2 * span)) * u
    sin, cos = phase.sin().clamp(min=0).detach(), phase.cos().clamp(
        min=0).detach()
    kernel = window.to(u.dtype).expand(channels, 1, -1, -1)

    def smooth(t):
        return F.conv2d(reflect_pad(t, pad), kernel, groups=channels)

    num = cos * smooth(cos * u) + sin * smooth(sin * u)
    den = cos * smooth(cos) + sin * smooth(sin)
    return num / (den + 1e-5)


class CoLoRAConv(LowRankInit, LayerUpdate):
    """The low-rank conv branch beside a depthwise conv: ``B_c * (u + λ
    F(u))``, ``u = A_c x``.

    Args:
        channels (int): C.
        rank (int): r (must divide C: ``B_c`` has r groups).
        filter_size (int): Side of the Gaussian window. Default: 11.
        filter_sigma (float): Its standard deviation. Default: 1.0.
        filter_scale (float): λ; None: no filter. Default: 0.2.

    Parameters: ``A`` [r, C, 1, 1], ``B`` [C, 1, 3, 3].
    """

    def __init__(self,
                 channels: int,
                 rank: int,
                 filter_size: int = 11,
                 filter_sigma: float = 1.0,
                 filter_scale: Union[float, None] = 0.2):
        super().__init__()
        self.rank, self.filter_scale = rank, filter_scale
        self.A = nn.Parameter(torch.empty(rank, channels, 1, 1))
        self.B = nn.Parameter(torch.empty(channels, 1, 3, 3))
        self.register_buffer(
            'window', gaussian_window(filter_size, filter_sigma),
            persistent=False)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> the branch's output [B, C, H, W]."""
        u = F.conv2d(x, self.A)
        if self.filter_scale is not None:
            u = u + self.filter_scale * self._filter(u)
        return F.conv2d(u, self.B, padding=1, groups=self.rank)

    def _filter(self, u):
        # as the official code under mixed precision: float16 autocast
        if torch.is_autocast_enabled(u.device.type):
            with torch.autocast(u.device.type, dtype=torch.float16):
                return bilateral_filter(u, self.window)
        return bilateral_filter(u, self.window)

    def hook(self, layer: nn.Module, args, output: torch.Tensor):
        """Forward hook of the depthwise conv: adds the branch."""
        return output + self(args[0])


class CoLoRAPointwise(LayerUpdate):
    """The correlated updates ``ΔW_1``, ``ΔW_2`` of a pair of pointwise
    linears ``fc2(act(fc1(x)))`` (channels last).

    It hooks both layers (each hook is given the other layer, whose weight
    the update reads) and keeps, in non-persistent buffers, the updates of
    the last forward (``W̄_k = W_k + ΔW_k`` of that forward); a forward
    pre-hook on the host makes them current at the start of every host
    forward, so a block recomputed for activation checkpointing sees the
    same ``W̄``.

    Args:
        channels (int): C, the inputs of fc1 and outputs of fc2.
        hidden (int): H, the outputs of fc1.
        rank (int): r.
        share_ratio (float): ρ; ``r_s = floor(ρ r)``. Default: 0.5.

    Parameters: ``shared_A`` [r_s, C], ``shared_B`` [C, r_s], ``A1``
    [r_i, C], ``B1`` [H, r_i], ``A2`` [r_i, H], ``B2`` [C, r_i].
    """

    def __init__(self,
                 channels: int,
                 hidden: int,
                 rank: int,
                 share_ratio: float = 0.5):
        super().__init__()
        self.shared_rank = int(rank * share_ratio)
        self.own_rank = rank - self.shared_rank
        self.channels = channels
        rs, ri = self.shared_rank, self.own_rank
        self.shared_A = nn.Parameter(torch.empty(rs, channels))
        self.shared_B = nn.Parameter(torch.empty(channels, rs))
        self.A1 = nn.Parameter(torch.empty(ri, channels))
        self.B1 = nn.Parameter(torch.empty(hidden, ri))
        self.A2 = nn.Parameter(torch.empty(ri, hidden))
        self.B2 = nn.Parameter(torch.empty(channels, ri))
        for i in (1, 2):
            self.register_buffer(f'last_delta{i}', None, persistent=False)
            self.register_buffer(f'pending_delta{i}', None, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        for A in (self.shared_A, self.A1, self.A2):
            if A.numel():
                nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        for B in (self.shared_B, self.B1, self.B2):
            nn.init.zeros_(B)
        self.forget()

    @torch.no_grad()
    def switch_off(self):
        for B in (self.shared_B, self.B1, self.B2):
            B.zero_()
        self.forget()

    def forget(self):
        """Start again from the pretrained weights (``W̄_k = W_k``)."""
        self.last_delta1 = self.last_delta2 = None
        self.pending_delta1 = self.pending_delta2 = None

    def bind(self, fc1: nn.Module, fc2: nn.Module, host=None):
        """Hook the two layers (and ``host``, to :meth:`advance` at each of
        its forwards)."""
        self.add_hook(fc1, partial(self._hook, 1, fc2))
        self.add_hook(fc2, partial(self._hook, 2, fc1))
        if host is not None:
            self.add_hook(host, self.advance, pre=True)

    def advance(self, host, args):
        """Forward pre-hook of the host: the updates of the last forward
        become ``W̄``."""
        for i in (1, 2):
            delta = getattr(self, f'pending_delta{i}')
            if delta is not None:
                setattr(self, f'last_delta{i}', delta)
            setattr(self, f'pending_delta{i}', None)

    def _weight_bar(self, k: int, layer: nn.Module) -> torch.Tensor:
        """W̄_k of ``layer`` (fc_k)."""
        weight = layer.weight.detach()
        last = getattr(self, f'last_delta{k}')
        return weight if last is None else weight + last

    def _own(self, B, A):
        scale = math.sqrt(self.own_rank) * (A.std() + B.std())
        return (B @ A) / scale

    def delta1(self, fc2: nn.Module) -> torch.Tensor:
        """ΔW_1 [H, C] (fp32), correlated through ``fc2``'s W̄_2."""
        delta = 0
        if self.shared_rank:
            kappa = (self.shared_rank * self.channels)**0.25
            left = self._weight_bar(2, fc2).t() @ self.shared_B  # [H, r_s]
            scale = kappa * (left.std() + self.shared_A.std())
            delta = left @ (self.shared_A / scale)
        if self.own_rank:
            delta = delta + self._own(self.B1, self.A1)
        return delta

    def delta2(self, fc1: nn.Module) -> torch.Tensor:
        """ΔW_2 [C, H] (fp32), correlated through ``fc1``'s W̄_1."""
        delta = 0
        if self.shared_rank:
            kappa = (self.shared_rank * self.channels)**0.25
            right = self.shared_A @ self._weight_bar(1, fc1).t()  # [r_s, H]
            scale = kappa * (right.std() + self.shared_B.std())
            delta = (self.shared_B / scale) @ right
        if self.own_rank:
            delta = delta + self._own(self.B2, self.A2)
        return delta

    def _hook(self, k, other, layer, args, output):
        """Forward hook of fc_k (``layer``; ``other``: the other one)."""
        # as the official code: the update in fp32, outside autocast; under
        # autocast the whole layer too (the frozen product computed in
        # float16 by the layer is replaced)
        x = args[0]
        mixed = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            delta = self.delta1(other) if k == 1 else self.delta2(other)
            setattr(self, f'pending_delta{k}', delta.detach())
            if mixed:
                return F.linear(x.float(), layer.weight + delta, layer.bias)
            update = F.linear(x.to(delta.dtype), delta)
        return output + update.to(output.dtype)


@PEFT_METHODS.register_module()
class CoLoRA(PEFTMethod):
    """CoLoRA on every block of a ConvNet host (ConvNeXt: a depthwise conv
    followed by two pointwise linears; layer aliases ``dwconv``, ``fc1``,
    ``fc2`` of one block).

    Args:
        rank (int | Sequence[int]): r of every block, or one r per stage.
            The official code sets r = C // reduction per stage (reduction
            16: (8, 16, 32, 64) on ConvNeXt-B). r must divide the stage's
            width C (the conv branch's grouped 3x3 conv). Default: 8.
        share_ratio (float): ρ in [0, 1], the shared part of r.
            Default: 0.5.
        use_filter (bool): The conv branch's filter. Default: True.
        filter_size (int): Odd side of the filter's Gaussian window.
            Default: 11.
        filter_sigma (float): Its standard deviation. Default: 1.0.
        filter_scale (float): λ. Default: 0.2.
    """

    requires = ('depthwise_pointwise_blocks', )
    default_targets = (('dwconv', 'fc1', 'fc2'), )
    width_setting = 'rank'
    # the official freeze_backbone keeps every bias and norm trainable
    # (convnext_colora.py), the output norms among them
    output_norms_trained = True

    def __init__(self,
                 rank: Union[int, Sequence[int]] = 8,
                 share_ratio: float = 0.5,
                 use_filter: bool = True,
                 filter_size: int = 11,
                 filter_sigma: float = 1.0,
                 filter_scale: float = 0.2):
        super().__init__(sites=())
        ranks = (rank, ) if isinstance(rank, int) else rank
        if isinstance(rank, (str, bool)) or not isinstance(
                ranks, Sequence) or not ranks or not all(
                    is_positive_int(r) for r in ranks):
            raise ValueError('CoLoRA: rank must be a positive integer or a '
                             f'list of them (one per stage), got {rank!r}')
        check_fraction(self.name, 'share_ratio', share_ratio, closed=True)
        if not is_positive_int(filter_size) or filter_size % 2 == 0:
            raise ValueError('CoLoRA: filter_size must be an odd positive '
                             f'integer, got {filter_size!r}')
        check_positive(self.name, 'filter_sigma', filter_sigma)
        check_positive(self.name, 'filter_scale', filter_scale)
        self.rank = rank if isinstance(rank, int) else tuple(rank)
        self.share_ratio = float(share_ratio)
        self.use_filter = bool(use_filter)
        self.filter_size, self.filter_sigma = filter_size, float(filter_sigma)
        self.filter_scale = float(filter_scale)

    def _blocks(self, host):
        """[(stage, C, dwconv, fc1, fc2)] of every block; raises when the
        host has not a depthwise conv and two pointwise linears per
        block."""
        name = type(host).__name__
        why = ('CoLoRA is defined for the depthwise + pointwise structure '
               'of ConvNet blocks (ConvNeXt): a conv branch beside each '
               "block's depthwise conv and correlated updates of the two "
               'pointwise linears that follow it')
        layers = {}
        for alias in self.resolve_targets(host):
            for layer_name, layer in self.resolve_layers(host, alias).items():
                parent = layer_name.rpartition('.')[0]
                layers.setdefault(parent, {})[alias] = (layer_name, layer)
        names = {id(m): n for n, m in host.named_modules()}
        blocks = []
        for i, (channels, stage) in enumerate(host.peft_stages()):
            for block in stage:
                found = layers.get(names[id(block)], {})
                if len(found) < 3:
                    raise ValueError(
                        f'CoLoRA cannot adapt {name}: block '
                        f'{names[id(block)]!r} does not hold a depthwise conv '
                        'and two pointwise linears side by side (found '
                        f'{sorted(n for n, _ in found.values()) or "none"}; '
                        f'{name} names dwconv '
                        f'{host.layer_aliases["dwconv"]!r}, fc1 '
                        f'{host.layer_aliases["fc1"]!r}). {why}.')
                (dw_name, dw), (_, fc1), (_, fc2) = (
                    found['dwconv'], found['fc1'], found['fc2'])
                if not (isinstance(dw, nn.Conv2d) and dw.groups
                        == dw.in_channels == dw.out_channels == channels
                        and getattr(fc1, 'weight', torch.empty(0)).dim() == 2
                        and fc1.weight.shape[1] == channels
                        and getattr(fc2, 'weight', torch.empty(0)).dim() == 2
                        and tuple(fc2.weight.shape) == tuple(
                            fc1.weight.shape[::-1])):
                    raise ValueError(
                        f'CoLoRA cannot adapt {name}: {dw_name} is not a '
                        f'depthwise conv of {channels} channels followed by '
                        f'two channel-last linears {channels} -> H -> '
                        f'{channels}. {why}.')
                blocks.append((i, channels, dw, fc1, fc2))
        return blocks

    def attach(self, host) -> None:
        blocks = self._blocks(host)
        stages = len(host.peft_stages())
        ranks = [
            per_stage(self.name, 'rank', self.rank, i, stages)
            for i in range(stages)
        ]
        for stage, channels, dw, fc1, fc2 in blocks:
            rank = ranks[stage]
            if channels % rank:
                raise ValueError(
                    f'CoLoRA rank {rank} of stage {stage} of '
                    f'{type(host).__name__} must divide its width '
                    f'{channels} (the conv branch is a 3x3 conv with '
                    f'{rank} groups)')
        for stage, channels, dw, fc1, fc2 in blocks:
            rank = ranks[stage]
            conv = CoLoRAConv(
                channels,
                rank,
                filter_size=self.filter_size,
                filter_sigma=self.filter_sigma,
                filter_scale=self.filter_scale if self.use_filter else None)
            conv.hook_into(dw, 'colora')
            pair = CoLoRAPointwise(channels, fc1.weight.shape[0], rank,
                                   self.share_ratio)
            fc1.add_module('colora', pair)
            pair.bind(fc1, fc2, host)

    def merge(self, host) -> None:
        """Refused: the conv branch cannot be folded (its filter is not
        linear, and its 3x3 conv mixes channels, which the depthwise conv
        it runs beside cannot take in)."""
        raise NotImplementedError(
            f'CoLoRA cannot be merged into the frozen weights of '
            f'{type(host).__name__}: the conv branch beside each depthwise '
            'conv is not linear (its filter) and mixes channels, which a '
            'depthwise conv cannot take in')
