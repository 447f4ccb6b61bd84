r"""ParaX: Parameters as Experts.

Every stage of a frozen backbone owns an :class:`ExpertCenter`, a pool of M
trainable low-rank projections and depthwise kernels. Each adapter of the
stage routes its input image into a per-sample mixture of those experts:

.. math::

    W_1 = \sum_m g_1[m] D_m,\quad W_2 = \sum_m g_2[m] U_m,\quad
    K_k = \sum_m g_k[m] B^{(k)}_m,\qquad g = \mathrm{softmax}(\mathrm{router}
    (\bar{x}))

and applies ``x + LS * (W_2 GELU(... cascade of K_k ... W_1 x))`` to the
residual stream (see :meth:`ParaXAdapter.forward` for the exact order).
"""
import math
import os
import weakref
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log

from mmparax.registry import PEFT_METHODS
from .base import PEFTMethod, PEFTModule


# set to 1 to run force_fp16 adapters in float16 on the CPU too (tests,
# tools/check_env.py); torch computes the same float16 ops there
FP16_ON_CPU_ENV = 'MMPARAX_FORCE_FP16_ON_CPU'


def fp16_adapter_device(device: torch.device) -> bool:
    """Whether ``force_fp16`` computes in float16 on ``device``: CUDA, or
    the CPU when ``$MMPARAX_FORCE_FP16_ON_CPU`` is ``1``."""
    return device.type == 'cuda' or (
        device.type == 'cpu' and os.environ.get(FP16_ON_CPU_ENV) == '1')


def _trunc_normal(slot):
    nn.init.trunc_normal_(slot, std=0.02)


def _kaiming_normal(slot):
    nn.init.kaiming_normal_(slot)


def _kaiming_uniform(slot):
    nn.init.kaiming_uniform_(slot, a=math.sqrt(5))


EXPERT_INITS = {
    'trunc_normal': _trunc_normal,
    'kaiming_normal': _kaiming_normal,
    'kaiming_uniform': _kaiming_uniform,
}
ROUTER_ACTS = ('softmax', 'sigmoid', 'relu')
LAYOUTS = ('cascade', 'parallel', 'sequential')
LAYER_INITS = ('kaiming_uniform', 'trunc_normal', 'trunc_normal_linear')


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'{name}={value!r} is not supported; '
                         f'choose one of {tuple(choices)}')


def _check_optional_number(name, value):
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, (int, float))):
        raise TypeError(f'{name} must be a number or None, got {value!r}')


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _check_kernel_sizes(kernel_sizes):
    """``kernel_sizes`` as a tuple; empty: no routed spatial experts."""
    if isinstance(kernel_sizes, int) or not isinstance(kernel_sizes,
                                                       (list, tuple)):
        raise TypeError('kernel_sizes must be a list or tuple of odd '
                        f'integers such as (3, 5, 7), got {kernel_sizes!r}')
    for k in kernel_sizes:
        if not isinstance(k, int) or k <= 0 or k % 2 == 0:
            raise ValueError('kernel_sizes must hold positive odd integers '
                             f'("same" padding needs odd kernels), got {k!r} '
                             f'in {tuple(kernel_sizes)}')
    if len(set(kernel_sizes)) != len(kernel_sizes):
        raise ValueError(f'kernel_sizes has duplicates: {tuple(kernel_sizes)}')
    return tuple(kernel_sizes)


def _check_adapter_settings(rank, kernel_sizes, with_conv, layout,
                            router_hidden, router_act, top_k, layer_scale,
                            res_scale, layer_init, scale_attention=True,
                            force_fp16=False, with_cp=False):
    """Raise naming the first :class:`ParaXAdapter` setting that is wrong."""
    for name, flag in (('with_conv', with_conv),
                       ('scale_attention', scale_attention),
                       ('force_fp16', force_fp16), ('with_cp', with_cp)):
        if not isinstance(flag, bool):
            raise TypeError(f'{name} must be True or False, got {flag!r}')
    _check_positive_int('rank', rank)
    _check_positive_int('router_hidden', router_hidden)
    _check_choice('layout', layout, LAYOUTS)
    _check_choice('router_act', router_act, ROUTER_ACTS)
    _check_choice('layer_init', layer_init, LAYER_INITS)
    _check_optional_number('layer_scale', layer_scale)
    _check_optional_number('res_scale', res_scale)
    if top_k is not None:
        _check_positive_int('top_k', top_k)
    if with_conv:
        _check_kernel_sizes(kernel_sizes)


class ExpertCenter(PEFTModule):
    """Experts shared by the adapters of one stage (or group of blocks).

    Args:
        dim (int): Channels C of the stage.
        rank (int): Bottleneck width.
        num_experts (int): Number of expert slots M.
        kernel_sizes (Sequence[int]): Kernel sizes of the depthwise expert
            banks; empty when the conv branch is off.
        init (str): Init of every slot: ``'trunc_normal'`` (std 0.02),
            ``'kaiming_normal'`` or ``'kaiming_uniform'`` (a=sqrt(5)).

    Parameters: ``down`` [M, rank, C] and ``up`` [M, C, rank] (stored like
    ``nn.Linear`` weights, out x in) and ``kernels['kxk']`` [M, rank, 1, k, k].
    """

    peft_component = 'expert_centers'

    def __init__(self,
                 dim: int,
                 rank: int,
                 num_experts: int,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 init: str = 'trunc_normal'):
        super().__init__()
        _check_positive_int('dim', dim)
        _check_positive_int('rank', rank)
        _check_positive_int('num_experts', num_experts)
        _check_choice('expert init', init, EXPERT_INITS)
        self.dim = dim
        self.rank = rank
        self.num_experts = num_experts
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.init = init
        self.down = nn.Parameter(torch.empty(num_experts, rank, dim))
        self.up = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.kernels = nn.ParameterDict({
            f'{k}x{k}': nn.Parameter(torch.empty(num_experts, rank, 1, k, k))
            for k in self.kernel_sizes
        })
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        init = EXPERT_INITS[self.init]
        for param in self.parameters():
            for slot in param:
                init(slot)

    def switch_off(self):
        pass  # a pool: the adapters that read it are switched off

    @staticmethod
    def _mix(gate, bank):
        """gate [B, M], bank [M, ...] -> [B, ...]."""
        return (gate @ bank.flatten(1)).view(gate.shape[0], *bank.shape[1:])

    def mix(self, gates: torch.Tensor):
        """Per-sample expert mixtures.

        Args:
            gates (Tensor): [B, 2 + len(kernel_sizes), M] routing weights, in
                the group order (down, up, kernel_sizes...).

        Returns:
            tuple: ``down`` [B, rank, C], ``up`` [B, C, rank] and a list of
            kernels [B, rank, 1, k, k], one per kernel size.
        """
        down = self._mix(gates[:, 0], self.down)
        up = self._mix(gates[:, 1], self.up)
        kernels = [
            self._mix(gates[:, 2 + i], self.kernels[f'{k}x{k}'])
            for i, k in enumerate(self.kernel_sizes)
        ]
        return down, up, kernels

    def extra_repr(self):
        return (f'dim={self.dim}, rank={self.rank}, '
                f'num_experts={self.num_experts}, '
                f'kernel_sizes={self.kernel_sizes}, init={self.init!r}')


class _DepthwiseConvCPU(torch.autograd.Function):
    """Depthwise conv, "same" padding, with a faster CPU weight gradient.

    On CPU the native depthwise weight gradient of kernels larger than 3x3
    dominates the adapter's cost; it equals a grouped convolution of the
    padded input with the output gradient as kernel, which runs an order of
    magnitude faster.
    """

    @staticmethod
    def forward(ctx, x, weight):
        """x: [1, G, H, W], weight: [G, 1, k, k] -> [1, G, H, W]."""
        ctx.save_for_backward(x, weight)
        k = weight.shape[-1]
        return F.conv2d(x, weight, padding=k // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        groups, _, k, _ = weight.shape
        grad_out = grad_out.contiguous()
        use_trick = k > 3 and ctx.needs_input_grad[1]
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1],
            False, [0, 0], groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1]
             and not use_trick, False])
        if use_trick:
            # x and grad_out hold one sample: the batch is folded in groups
            grid = grad_out.shape[-2:]
            grad_w = F.conv2d(
                F.pad(x, (k // 2, ) * 4),
                grad_out.reshape(groups, 1, *grid),
                groups=groups).reshape(weight.shape)
        return grad_x, grad_w


def dynamic_depthwise_conv(x: torch.Tensor, weight: torch.Tensor):
    """Depthwise conv with a different kernel for every sample.

    Args:
        x (Tensor): [B, C, H, W].
        weight (Tensor): [B, C, 1, k, k], k odd ("same" padding, no bias).

    Returns:
        Tensor: [B, C, H, W].
    """
    B, C, H, W = x.shape
    k = weight.shape[-1]
    # The batch is folded into the channels: one grouped conv, no loop over
    # samples.
    x = x.reshape(1, B * C, H, W)
    weight = weight.reshape(B * C, 1, k, k).to(x.dtype)
    if x.device.type == 'cpu':
        out = _DepthwiseConvCPU.apply(x, weight)
    else:
        out = F.conv2d(x, weight, padding=k // 2, groups=B * C)
    return out.view(B, C, H, W)


class ParaXAdapter(PEFTModule):
    """ParaX adapter: routes its input into its stage's expert center.

    Args:
        dim (int): Channels C of the residual stream.
        rank (int): Bottleneck width. Default: 128.
        num_experts (int): Experts M of the center it routes into.
        kernel_sizes (Sequence[int]): Kernel sizes of the routed depthwise
            cascade; ``()`` with ``with_conv=True`` keeps only the static
            3x3 convs (no spatial experts, cascade or SA: the paper's
            ParaX‡, the reference's ``parax_kernel_sizes=None``). Default:
            (3, 5, 7).
        with_conv (bool): Conv branch (static depthwise 3x3 convs and the
            routed cascade); ``False`` drops all of it. Default: True.
        scale_attention (bool): Mix the cascade outputs with the per-token
            scale attention (SA); otherwise average them. With one kernel
            size there is no SA (the reference still builds and counts an
            unused Linear(rank, 1): rank + 1 parameters per adapter more
            than ours). Default: True.
        layout (str): ``'cascade'`` (each conv sees a learned blend of the
            cascade input and the previous output), ``'sequential'`` (each
            conv sees the previous output) or ``'parallel'`` (each conv sees
            the cascade input). Default: 'cascade'.
        router_hidden (int): Router hidden width. Default: 16.
        router_act (str): Gate activation over the M experts of each group:
            ``'softmax'``, ``'sigmoid'`` or ``'relu'``. Default: 'softmax'.
        top_k (int, optional): Keep the k largest gates of each group (sparse
            routing); None keeps all M. Default: None.
        layer_scale (float, optional): Init of the per-channel output scale
            (with a bias initialised to 0); None disables both. Default: 1.0.
        res_scale (float, optional): Init of the per-channel scale of the
            residual path (with a bias initialised to 0); None disables
            both. Default: 1.0.
        layer_init (str): Init of the adapter's own Linear and Conv layers:
            ``'kaiming_uniform'`` (PyTorch's, a=sqrt(5), biases 0),
            ``'trunc_normal'`` (std 0.02, biases 0; the reference ConvNeXt)
            or ``'trunc_normal_linear'`` (Linear layers std 0.02 with biases
            0, convs left at PyTorch's default init; the reference VMamba).
            Default: 'kaiming_uniform'.
        force_fp16 (bool): On CUDA, run the adapter in float16 whatever the
            surrounding precision, as the reference's ``force_fp16``: the
            input (and so the residual shortcut), the features after the
            first depthwise conv, the experts, the cascade scales, the scale
            attention and ``proj`` biases and the output / residual scales
            and biases are cast to float16 under a float16 autocast, so the
            residual maths (scales, biases, the final add) runs in float16;
            the result is cast back to the input's dtype. Parameters stay
            float32 (names and counts unchanged). On other devices it does
            nothing, except on the CPU with ``$MMPARAX_FORCE_FP16_ON_CPU=1``
            (the CUDA path, for tests). Default: False (the residual maths stays in the
            input's dtype, float32 under autocast).
        with_cp (bool): Recompute the adapter's activations in the backward
            pass (activation checkpointing) instead of keeping them: only
            the input is saved, for about a third more adapter compute.
            Outputs and gradients are unchanged. Default: False.
    """

    def __init__(self,
                 dim: int,
                 rank: int = 128,
                 num_experts: int = 1,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 with_conv: bool = True,
                 scale_attention: bool = True,
                 layout: str = 'cascade',
                 router_hidden: int = 16,
                 router_act: str = 'softmax',
                 top_k: Optional[int] = None,
                 layer_scale: Optional[float] = 1.0,
                 res_scale: Optional[float] = 1.0,
                 layer_init: str = 'kaiming_uniform',
                 force_fp16: bool = False,
                 with_cp: bool = False):
        super().__init__()
        _check_positive_int('dim', dim)
        _check_positive_int('num_experts', num_experts)
        _check_adapter_settings(rank, kernel_sizes, with_conv, layout,
                                router_hidden, router_act, top_k,
                                layer_scale, res_scale, layer_init,
                                scale_attention, force_fp16, with_cp)
        if top_k is not None:
            if top_k > num_experts:
                raise ValueError(
                    f'top_k={top_k} is larger than the {num_experts} experts '
                    'of this center; use top_k <= num_experts or None for '
                    'dense routing')
        self.dim = dim
        self.rank = rank
        self.num_experts = num_experts
        self.with_conv = with_conv
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes) \
            if with_conv else ()
        self.layout = layout
        self.router_act = router_act
        self.top_k = top_k
        self.layer_init = layer_init
        self.force_fp16 = force_fp16
        self.with_cp = with_cp
        self.num_groups = 2 + len(self.kernel_sizes)
        num_kernels = len(self.kernel_sizes)

        self.norm = nn.LayerNorm(dim)
        self.norm_gamma = nn.Parameter(torch.full((dim, ), 1e-5))
        if with_conv:
            self.dwconv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.dwconv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.router = nn.Sequential(
            nn.Linear(dim, router_hidden), nn.GELU(),
            nn.Linear(router_hidden, self.num_groups * num_experts))
        self.scale_attn = nn.Linear(rank, num_kernels) \
            if scale_attention and num_kernels > 1 else None
        if layout == 'cascade' and num_kernels > 1:
            self.cascade_scale = nn.Parameter(torch.ones(2 * (num_kernels - 1)))
        else:
            self.cascade_scale = None
        self.proj = nn.Linear(rank, rank)
        self.layer_scale_init = layer_scale
        self.res_scale_init = res_scale
        if layer_scale is not None:
            self.layer_scale = nn.Parameter(torch.empty(dim))
            self.layer_bias = nn.Parameter(torch.empty(dim))
        if res_scale is not None:
            self.res_scale = nn.Parameter(torch.empty(dim))
            self.res_bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def switch_off(self):
        """Output 0 and pass the stream through unchanged."""
        if self.layer_scale_init is not None:
            self.layer_scale.zero_()
            self.layer_bias.zero_()
        if self.res_scale_init is not None:
            self.res_scale.fill_(1.0)
            self.res_bias.zero_()

    @torch.no_grad()
    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d) \
                    and self.layer_init == 'trunc_normal_linear':
                m.reset_parameters()
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                if self.layer_init.startswith('trunc_normal'):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                else:
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                nn.init.zeros_(m.bias)
        self.norm.reset_parameters()
        self.norm_gamma.fill_(1e-5)
        if self.cascade_scale is not None:
            self.cascade_scale.fill_(1.0)
        if self.layer_scale_init is not None:
            self.layer_scale.fill_(self.layer_scale_init)
            self.layer_bias.zero_()
        if self.res_scale_init is not None:
            self.res_scale.fill_(self.res_scale_init)
            self.res_bias.zero_()

    def route(self, pooled: torch.Tensor) -> torch.Tensor:
        """Routing weights of each sample.

        Args:
            pooled (Tensor): [B, C] token average.

        Returns:
            Tensor: [B, num_groups, M] gates, each group normalised over M.
        """
        logits = self.router(pooled)
        logits = logits.view(-1, self.num_groups, self.num_experts)
        keep = None
        if self.top_k is not None and self.top_k < self.num_experts:
            top = logits.topk(self.top_k, dim=-1).indices
            keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(
                -1, top, True)
        if self.router_act == 'softmax':
            if keep is not None:
                logits = logits.masked_fill(~keep, float('-inf'))
            return logits.softmax(dim=-1)
        gates = logits.sigmoid() if self.router_act == 'sigmoid' \
            else logits.relu()
        return gates if keep is None else gates * keep

    def _spatial_mix(self, x0, kernels, hw_shape, cast=None):
        """Routed depthwise cascade and scale attention.

        Args:
            x0 (Tensor): [B, rank, H*W] cascade input, channels first.
            kernels (list[Tensor]): [B, rank, 1, k, k] per kernel size.
            cast (callable, optional): Applied to the cascade scales and the
                scale attention bias (float16 under ``force_fp16``).

        Returns:
            Tensor: [B, rank, H*W], the mixture plus ``x0``.
        """
        B, R, L = x0.shape
        grid = x0.view(B, R, *hw_shape)
        outs, prev = [], None
        for i, kernel in enumerate(kernels):
            if i == 0 or self.layout == 'parallel':
                inp = grid
            elif self.layout == 'sequential':
                inp = prev
            else:
                a = self.cascade_scale if cast is None \
                    else cast(self.cascade_scale)
                inp = torch.addcmul(a[2 * i - 2] * grid, prev, a[2 * i - 1])
            prev = dynamic_depthwise_conv(inp, kernel)
            outs.append(prev.view(B, R, L))
        if len(outs) == 1:
            return outs[0] + x0
        if self.scale_attn is None:
            return sum(outs) / len(outs) + x0
        sa = self.scale_attn
        bias = sa.bias if cast is None else cast(sa.bias)
        total = outs[0] + outs[1]
        for o in outs[2:]:
            total += o
        weights = torch.matmul(sa.weight, total).add_(bias[:, None])
        weights = weights.softmax(dim=1)  # [B, num_kernels, L]
        mixed = torch.addcmul(x0, outs[0], weights[:, :1])
        for i, o in enumerate(outs[1:], 1):
            mixed.addcmul_(o, weights[:, i:i + 1])
        return mixed

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                center: ExpertCenter) -> torch.Tensor:
        """Adapt the residual stream.

        Args:
            x (Tensor): [B, L, C] tokens, L = H * W.
            hw_shape (tuple[int, int]): (H, W) token grid.
            center (ExpertCenter): The expert center of this adapter's stage.

        Returns:
            Tensor: [B, L, C].
        """
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(
                self._dispatch, x, hw_shape, center, use_reentrant=False)
        return self._dispatch(x, hw_shape, center)

    def _dispatch(self, x, hw_shape, center):
        if self.force_fp16 and fp16_adapter_device(x.device):
            dtype = x.dtype
            with torch.autocast(x.device.type, dtype=torch.float16):
                out = self._forward(x.half(), hw_shape, center, fp16=True)
            return out.to(dtype)
        return self._forward(x, hw_shape, center)

    def _forward(self, x, hw_shape, center, fp16=False):
        """The adapter; ``fp16``: the float16 path of ``force_fp16`` (called
        under a float16 autocast with a float16 ``x``)."""
        B, L, C = x.shape
        shortcut = x
        half = (lambda t: t.half()) if fp16 else None
        if fp16:  # LN(x) * gamma + x, gamma in float16 as the reference's
            x = F.layer_norm(x, (C, ), self.norm.weight, self.norm.bias,
                             self.norm.eps) * half(self.norm_gamma) + x
        else:  # the same, gamma folded into the affine LN parameters
            gamma = self.norm_gamma
            x = F.layer_norm(x, (C, ), self.norm.weight * gamma,
                             self.norm.bias * gamma, self.norm.eps) + x
        # Tokens [B, L, C] are a channels-last [B, C, H, W] map: the static
        # depthwise convs run on them without layout copies.
        if self.with_conv:
            x = self._residual_dwconv(self.dwconv1, x, hw_shape, fp16)
        if fp16:  # the routed part starts from float16 features
            x = x.half()

        down, up, kernels = center.mix(self.route(x.mean(dim=1)))
        # The routed bottleneck runs channels first ([B, rank, L]), the
        # layout of the per-sample depthwise cascade.
        x = torch.bmm(down, x.transpose(1, 2))
        # Without a conv branch the reference adds the projection to itself.
        x = self._spatial_mix(x, kernels, hw_shape, half) if kernels \
            else x + x
        if fp16:  # proj in float16 (bias included), as an autocast Linear
            x = x + (torch.matmul(self.proj.weight, x) +
                     half(self.proj.bias)[:, None])
        else:  # x + proj(x) as one matmul
            weight = self.proj.weight + torch.eye(
                self.rank, dtype=x.dtype, device=x.device)
            x = torch.baddbmm(self.proj.bias[:, None],
                              weight.expand(B, -1, -1), x)
        x = torch.bmm(up, F.gelu(x)).transpose(1, 2).contiguous()
        if self.with_conv:  # x: [B, L, C]
            x = self._residual_dwconv(self.dwconv2, x, hw_shape, fp16)

        return self._residual_out(x, shortcut, half)

    @staticmethod
    def _residual_dwconv(conv, x, hw_shape, fp16=False):
        """``x + conv(x)`` for tokens x: [B, L, C] -> [B, L, C].

        The tokens are viewed as a channels-last map (no copy; the fast
        layout of depthwise convs on CPUs); outside ``force_fp16`` the
        identity is folded into the kernel.
        """
        B, L, C = x.shape
        grid = x.reshape(B, *hw_shape, C).permute(0, 3, 1, 2)
        pad = conv.kernel_size[0] // 2
        if fp16:
            out = grid + conv(grid)
        else:
            identity = torch.zeros_like(conv.weight[0, 0])
            identity[pad, pad] = 1
            out = F.conv2d(grid, conv.weight + identity, conv.bias,
                           padding=pad, groups=C)
        return out.permute(0, 2, 3, 1).reshape(B, L, C)

    def _residual_out(self, x, shortcut, cast=None):
        """``x * layer_scale + layer_bias + shortcut * res_scale +
        res_bias`` (each pair only if enabled); x, shortcut: [B, L, C].

        ``cast`` (float16 under ``force_fp16``): the reference's order of
        operations on cast scales and biases.
        """
        layer = None if self.layer_scale_init is None \
            else (self.layer_scale, self.layer_bias)
        res = None if self.res_scale_init is None \
            else (self.res_scale, self.res_bias)
        if cast is not None:
            if layer is not None:
                x = torch.addcmul(cast(layer[1]), x, cast(layer[0]))
            if res is not None:
                shortcut = torch.addcmul(cast(res[1]), shortcut, cast(res[0]))
            return x + shortcut
        if layer is None and res is None:
            return x + shortcut
        if res is None:
            return torch.addcmul(layer[1], x, layer[0]).add_(shortcut)
        if layer is None:
            return torch.addcmul(res[1], shortcut, res[0]).add_(x)
        return torch.addcmul(layer[1] + res[1], x,
                             layer[0]).addcmul_(shortcut, res[0])

    def extra_repr(self):
        return (f'dim={self.dim}, rank={self.rank}, '
                f'num_experts={self.num_experts}, '
                f'kernel_sizes={self.kernel_sizes}, layout={self.layout!r}, '
                f'router_act={self.router_act!r}, top_k={self.top_k}' +
                (', force_fp16=True' if self.force_fp16 else '') +
                (', with_cp=True' if self.with_cp else ''))


# hosts whose force_fp16 no-op has been logged (once per model)
_FP16_NOTED = weakref.WeakSet()


@PEFT_METHODS.register_module()
class ParaX(PEFTMethod):
    """ParaX: every adapter routes into the expert center of its stage.

    Attached to a host, ParaX registers ``expert_centers`` (``[stage]
    [group]``, one :class:`ExpertCenter` per stage, or per group of
    ``blocks_per_center`` consecutive blocks) and puts one
    :class:`ParaXAdapter` at each of its sites of every block, by default
    after every residual add (Swin and VMamba: after the token mixer and
    after the MLP; ConvNeXt: after the block). Every adapter of a group
    routes into that group's center.

    Args:
        rank (int): Bottleneck width. Default: 128.
        kernel_sizes (Sequence[int]): Routed depthwise kernel sizes; ``()``
            keeps only the static 3x3 convs (the paper's ParaX‡).
            Default: (3, 5, 7).
        with_conv (bool): Conv branch on (False: no conv at all).
            Default: True.
        scale_attention (bool): Scale attention over the kernels. Default: True.
        layout (str): ``'cascade'``, ``'sequential'`` or ``'parallel'``.
        router_hidden (int): Router hidden width. Default: 16.
        router_act (str): ``'softmax'``, ``'sigmoid'`` or ``'relu'``.
        top_k (int | Sequence[int | None], optional): Sparse routing:
            experts kept per gate (one value, or one per stage; None keeps
            every expert).
        expert_ratio (float): M = expert_ratio x blocks sharing a center
            (rounded, at least 1). Default: 1.0.
        num_experts (int | Sequence[int], optional): M per center, overriding
            ``expert_ratio`` (one value, or one per stage).
        blocks_per_center (int | Sequence[int], optional): Consecutive blocks
            sharing a center (one value, or one per stage; None = the whole
            stage). Default: None.
        expert_init (str): Expert init. Default: 'trunc_normal'.
        layer_init (str): Init of the adapters' Linear/Conv layers, see
            :class:`ParaXAdapter`. Default: 'kaiming_uniform'.
        layer_scale (float, optional): Adapter output scale init. Default: 1.0.
        res_scale (float, optional): Residual scale init. Default: 1.0.
        sites (Sequence[str], optional): Block sites; None: after every
            residual add of the host.
        force_fp16 (bool): Adapter maths in float16 on CUDA, as the
            reference's ``parax_force_fp16`` (see :class:`ParaXAdapter`);
            elsewhere a no-op, logged once per model at its first forward.
            Default: False.
        with_cp (bool): Activation checkpointing of the adapters (see
            :class:`ParaXAdapter`): less training memory, more compute.
            Default: False.
    """

    default_sites = ('residual', )
    # the reference trains its output norms on Swin and ConvNeXt
    # (``extra_norm`` in the freeze loop), not on VMamba
    # (``set_only_parax_trainable``)
    output_norms_trained = True

    def trains_output_norms(self, host) -> bool:
        if self.train_output_norms is None and any(
                c.__name__ == 'VMamba' for c in type(host).__mro__):
            return False
        return super().trains_output_norms(host)

    def __init__(self,
                 rank: int = 128,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 with_conv: bool = True,
                 scale_attention: bool = True,
                 layout: str = 'cascade',
                 router_hidden: int = 16,
                 router_act: str = 'softmax',
                 top_k: Union[int, Sequence[Optional[int]], None] = None,
                 expert_ratio: float = 1.0,
                 num_experts: Union[int, Sequence[int], None] = None,
                 blocks_per_center: Union[int, Sequence[Optional[int]],
                                          None] = None,
                 expert_init: str = 'trunc_normal',
                 layer_init: str = 'kaiming_uniform',
                 layer_scale: Optional[float] = 1.0,
                 res_scale: Optional[float] = 1.0,
                 sites: Optional[Sequence[str]] = None,
                 force_fp16: bool = False,
                 with_cp: bool = False):
        super().__init__(sites)
        _check_choice('expert_init', expert_init, EXPERT_INITS)
        if not isinstance(expert_ratio, (int, float)) or not expert_ratio > 0:
            raise ValueError(
                f'expert_ratio must be positive, got {expert_ratio!r}')
        self.top_k = tuple(top_k) if isinstance(top_k, (list, tuple)) \
            else top_k
        per_stage = isinstance(self.top_k, tuple)
        for k in self.top_k if per_stage else ():
            if k is not None:
                _check_positive_int('top_k', k)
        self.adapter_cfg = dict(
            rank=rank,
            kernel_sizes=kernel_sizes,
            with_conv=with_conv,
            scale_attention=scale_attention,
            layout=layout,
            router_hidden=router_hidden,
            router_act=router_act,
            top_k=None if per_stage else top_k,
            layer_scale=layer_scale,
            res_scale=res_scale,
            layer_init=layer_init,
            force_fp16=force_fp16,
            with_cp=with_cp)
        _check_adapter_settings(**self.adapter_cfg)
        self.expert_ratio = expert_ratio
        self.num_experts = num_experts
        self.blocks_per_center = blocks_per_center
        self.expert_init = expert_init

    @property
    def kernel_sizes(self) -> Tuple[int, ...]:
        cfg = self.adapter_cfg
        return tuple(cfg['kernel_sizes']) if cfg['with_conv'] else ()

    @staticmethod
    def _per_stage(name, value, stage):
        if isinstance(value, (list, tuple)):
            if stage >= len(value):
                raise ValueError(f'{name}={value!r} gives no value for stage '
                                 f'{stage}; give one value per stage')
            return value[stage]
        return value

    def _group_size(self, depth, stage):
        size = self._per_stage('blocks_per_center', self.blocks_per_center,
                               stage)
        if size is None:
            return depth
        _check_positive_int('blocks_per_center', size)
        return min(size, depth)

    def center_index(self, block: int, depth: int, stage: int) -> int:
        """Index of the center that block ``block`` of ``stage`` routes into."""
        return block // self._group_size(depth, stage)

    def build_centers(self, dim: int, depth: int,
                      stage: int) -> nn.ModuleList:
        """Expert centers of a stage of ``depth`` blocks and width ``dim``."""
        size = self._group_size(depth, stage)
        top_k = self._per_stage('top_k', self.top_k, stage)
        centers = nn.ModuleList()
        for start in range(0, depth, size):
            blocks = min(size, depth - start)
            m = self._per_stage('num_experts', self.num_experts, stage)
            if m is None:
                m = max(1, int(round(self.expert_ratio * blocks)))
            _check_positive_int('num_experts', m)
            if top_k is not None and top_k > m:
                raise ValueError(
                    f'top_k={top_k} exceeds the {m} experts of stage '
                    f'{stage} (a center shared by {blocks} blocks); lower '
                    'top_k or raise expert_ratio / num_experts')
            centers.append(
                ExpertCenter(dim, self.adapter_cfg['rank'], m,
                             self.kernel_sizes, self.expert_init))
        return centers

    def build_adapter(self,
                      dim: int,
                      center: ExpertCenter,
                      stage: int = 0) -> ParaXAdapter:
        """An adapter of width ``dim`` of ``stage``, routing into
        ``center``."""
        cfg = dict(self.adapter_cfg,
                   top_k=self._per_stage('top_k', self.top_k, stage))
        return ParaXAdapter(dim, num_experts=center.num_experts, **cfg)

    def attach(self, host) -> None:
        sites = self.resolve_sites(host)
        stages = host.peft_stages()
        centers = nn.ModuleList(
            self.build_centers(dim, len(blocks), i)
            for i, (dim, blocks) in enumerate(stages))
        host.add_module('expert_centers', centers)
        for i, (dim, blocks) in enumerate(stages):
            for j in range(len(blocks)):
                index = self.center_index(j, len(blocks), i)
                for site in sites:
                    adapter = self.build_adapter(dim, centers[i][index], i)
                    adapter.center_key = (i, index)  # no second owner
                    host.add_site_module(i, j, site, adapter)

    def site_forward(self, host, module, x, hw_shape):
        if module.force_fp16 and not fp16_adapter_device(x.device) \
                and host not in _FP16_NOTED:
            _FP16_NOTED.add(host)
            print_log(
                f'ParaX force_fp16=True has no effect on {x.device.type}: '
                'float16 adapter maths runs only on CUDA; the adapters of '
                f'{type(host).__name__} compute in {x.dtype}',
                logger='current')
        stage, index = module.center_key
        return module(x, hw_shape, host.expert_centers[stage][index])
