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
import dataclasses
import math
import os
import weakref
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log

from mmparax.ops import dynamic_depthwise_conv
from mmparax.ops import parax_adapter as parax_ops
from mmparax.registry import PEFT_METHODS
from .base import (
    PEFTMethod,
    PEFTModule,
    check_bool,
    check_choice,
    check_number,
    check_positive,
    check_positive_int,
    per_stage,
)

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


def check_kernel_sizes(kernel_sizes) -> Tuple[int, ...]:
    """``kernel_sizes`` as a tuple of distinct odd sizes; empty: no routed
    spatial experts."""
    if isinstance(kernel_sizes, int) or not isinstance(kernel_sizes,
                                                       (list, tuple)):
        raise TypeError('ParaX: kernel_sizes must be a list or tuple of odd '
                        f'integers such as (3, 5, 7), got {kernel_sizes!r}')
    for k in kernel_sizes:
        if not isinstance(k, int) or k <= 0 or k % 2 == 0:
            raise ValueError('ParaX: kernel_sizes must hold positive odd '
                             'integers ("same" padding needs odd kernels), '
                             f'got {k!r} in {tuple(kernel_sizes)}')
    if len(set(kernel_sizes)) != len(kernel_sizes):
        raise ValueError(
            f'ParaX: kernel_sizes has duplicates: {tuple(kernel_sizes)}')
    return tuple(kernel_sizes)


@dataclasses.dataclass(frozen=True)
class AdapterSettings:
    """The settings of a :class:`ParaXAdapter`, checked when built.

    Args:
        hidden_dim (int): Bottleneck width. Default: 128.
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
            unused Linear(hidden_dim, 1): hidden_dim + 1 parameters per
            adapter more than ours). Default: True.
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
            (the CUDA path, for tests). Default: False (the residual maths
            stays in the input's dtype, float32 under autocast).
        with_cp (bool): Recompute the adapter's activations in the backward
            pass (activation checkpointing) instead of keeping them: only
            the input is saved, for about a third more adapter compute.
            Outputs and gradients are unchanged. Default: False.
    """

    hidden_dim: int = 128
    kernel_sizes: Sequence[int] = (3, 5, 7)
    with_conv: bool = True
    scale_attention: bool = True
    layout: str = 'cascade'
    router_hidden: int = 16
    router_act: str = 'softmax'
    top_k: Optional[int] = None
    layer_scale: Optional[float] = 1.0
    res_scale: Optional[float] = 1.0
    layer_init: str = 'kaiming_uniform'
    force_fp16: bool = False
    with_cp: bool = False

    def __post_init__(self):
        for name in ('with_conv', 'scale_attention', 'force_fp16', 'with_cp'):
            check_bool('ParaX', name, getattr(self, name))
        check_positive_int('ParaX', 'hidden_dim', self.hidden_dim)
        check_positive_int('ParaX', 'router_hidden', self.router_hidden)
        check_choice('ParaX', 'layout', self.layout, LAYOUTS)
        check_choice('ParaX', 'router_act', self.router_act, ROUTER_ACTS)
        check_choice('ParaX', 'layer_init', self.layer_init, LAYER_INITS)
        for name in ('layer_scale', 'res_scale'):
            if getattr(self, name) is not None:
                check_number('ParaX', name, getattr(self, name), ' or None')
        if self.top_k is not None:
            check_positive_int('ParaX', 'top_k', self.top_k, ' or None')
        # without the conv branch there are no spatial experts
        object.__setattr__(
            self, 'kernel_sizes',
            check_kernel_sizes(self.kernel_sizes) if self.with_conv else ())

    @classmethod
    def from_kwargs(cls, owner: str, kwargs: dict) -> 'AdapterSettings':
        """Build from keyword arguments, naming any unknown one."""
        names = [f.name for f in dataclasses.fields(cls)]
        if 'rank' in kwargs:
            raise TypeError(
                f'{owner}: the bottleneck width is called hidden_dim (rank '
                'names the rank of a low-rank weight update, as in LoRA); '
                f'write hidden_dim={kwargs["rank"]!r} instead of '
                f'rank={kwargs["rank"]!r}')
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f'{owner} got unknown arguments {unknown}; the '
                            f'adapter settings are {names}')
        return cls(**kwargs)


class ExpertCenter(PEFTModule):
    """Experts shared by the adapters of one stage (or group of blocks).

    Args:
        dim (int): Channels C of the stage.
        hidden_dim (int): Bottleneck width.
        num_experts (int): Number of expert slots M.
        kernel_sizes (Sequence[int]): Kernel sizes of the depthwise expert
            banks; empty when the conv branch is off.
        init (str): Init of every slot: ``'trunc_normal'`` (std 0.02),
            ``'kaiming_normal'`` or ``'kaiming_uniform'`` (a=sqrt(5)).

    Parameters: ``down`` [M, hidden_dim, C] and ``up`` [M, C, hidden_dim]
    (stored like ``nn.Linear`` weights, out x in) and ``kernels['kxk']``
    [M, hidden_dim, 1, k, k].
    """

    peft_component = 'expert_centers'

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 num_experts: int,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 init: str = 'trunc_normal'):
        super().__init__()
        check_positive_int('ParaX', 'dim', dim)
        check_positive_int('ParaX', 'hidden_dim', hidden_dim)
        check_positive_int('ParaX', 'num_experts', num_experts)
        check_choice('ParaX', 'expert_init', init, EXPERT_INITS)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.num_experts = num_experts
        self.kernel_sizes = check_kernel_sizes(kernel_sizes)
        self.init = init
        self.down = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.up = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.kernels = nn.ParameterDict({
            f'{k}x{k}': nn.Parameter(
                torch.empty(num_experts, hidden_dim, 1, k, k))
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
            tuple: ``down`` [B, hidden_dim, C], ``up`` [B, C, hidden_dim]
            and a list of kernels [B, hidden_dim, 1, k, k], one per kernel
            size.
        """
        down = self._mix(gates[:, 0], self.down)
        up = self._mix(gates[:, 1], self.up)
        kernels = [
            self._mix(gates[:, 2 + i], self.kernels[f'{k}x{k}'])
            for i, k in enumerate(self.kernel_sizes)
        ]
        return down, up, kernels

    def extra_repr(self):
        return (f'dim={self.dim}, hidden_dim={self.hidden_dim}, '
                f'num_experts={self.num_experts}, '
                f'kernel_sizes={self.kernel_sizes}, init={self.init!r}')


class ParaXAdapter(PEFTModule):
    """ParaX adapter: routes its input into its stage's expert center.

    Args:
        dim (int): Channels C of the residual stream.
        num_experts (int): Experts M of the center it routes into.
        **settings: The :class:`AdapterSettings` (``hidden_dim``,
            ``kernel_sizes``, ``with_conv``, ``scale_attention``,
            ``layout``, ``router_hidden``, ``router_act``, ``top_k``,
            ``layer_scale``, ``res_scale``, ``layer_init``, ``force_fp16``,
            ``with_cp``).
    """

    def __init__(self, dim: int, num_experts: int = 1, **settings):
        super().__init__()
        check_positive_int('ParaX', 'dim', dim)
        check_positive_int('ParaX', 'num_experts', num_experts)
        s = AdapterSettings.from_kwargs('ParaXAdapter', settings)
        if s.top_k is not None and s.top_k > num_experts:
            raise ValueError(
                f'ParaX: top_k={s.top_k} is larger than the {num_experts} '
                'experts of this center; use top_k <= num_experts or None '
                'for dense routing')
        self.dim = dim
        self.hidden_dim = s.hidden_dim
        self.num_experts = num_experts
        self.with_conv = s.with_conv
        self.kernel_sizes = s.kernel_sizes
        self.layout = s.layout
        self.router_act = s.router_act
        self.top_k = s.top_k
        self.layer_init = s.layer_init
        self.force_fp16 = s.force_fp16
        self.with_cp = s.with_cp
        self.num_groups = 2 + len(self.kernel_sizes)
        num_kernels = len(self.kernel_sizes)
        hidden_dim = s.hidden_dim

        self.norm = nn.LayerNorm(dim)
        self.norm_gamma = nn.Parameter(torch.full((dim, ), 1e-5))
        if s.with_conv:
            self.dwconv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.dwconv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.router = nn.Sequential(
            nn.Linear(dim, s.router_hidden), nn.GELU(),
            nn.Linear(s.router_hidden, self.num_groups * num_experts))
        self.scale_attn = nn.Linear(hidden_dim, num_kernels) \
            if s.scale_attention and num_kernels > 1 else None
        if s.layout == 'cascade' and num_kernels > 1:
            self.cascade_scale = nn.Parameter(
                torch.ones(2 * (num_kernels - 1)))
        else:
            self.cascade_scale = None
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.layer_scale_init = s.layer_scale
        self.res_scale_init = s.res_scale
        if s.layer_scale is not None:
            self.layer_scale = nn.Parameter(torch.empty(dim))
            self.layer_bias = nn.Parameter(torch.empty(dim))
        if s.res_scale is not None:
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
            # explicit float16 casts, whatever autocast surrounds it
            with torch.autocast(x.device.type, enabled=False):
                out = self._forward(x.half(), hw_shape, center, fp16=True)
            return out.to(x.dtype)
        return self._forward(x, hw_shape, center)

    def _forward(self, x, hw_shape, center, fp16=False):
        """The adapter; ``fp16``: the float16 path of ``force_fp16`` (a
        float16 ``x``; scales, biases, experts and the routing in float16,
        the LayerNorm and the scale-attention softmax in float32, the sums
        apart from the weights, as the reference's).

        Its steps (:mod:`mmparax.ops.parax_adapter`) keep the outputs of the
        matmuls and convolutions and recompute the elementwise work in the
        backward pass.
        """
        fold, shortcut = not fp16, x

        def cast(t):
            return t.half() if fp16 and t is not None else t

        conv1 = (cast(self.dwconv1.weight), cast(self.dwconv1.bias)) \
            if self.with_conv else (None, None)
        feats = parax_ops.stem(x, self.norm.weight, self.norm.bias,
                               cast(self.norm_gamma), *conv1, hw_shape,
                               self.norm.eps, fold)
        with torch.autocast(x.device.type, dtype=torch.float16,
                            enabled=fp16):
            down, up, kernels = center.mix(self.route(feats.mean(dim=1)))
        # The routed bottleneck runs channels first ([B, hidden_dim, L]), the
        # layout of the per-sample depthwise cascade.
        x0 = parax_ops.down_project(feats, cast(down))
        outs = self._cascade(x0, kernels, hw_shape, cast)
        sa = self.scale_attn
        x = parax_ops.mix_project(
            x0, outs, None if sa is None else cast(sa.weight),
            None if sa is None else cast(sa.bias), cast(self.proj.weight),
            cast(self.proj.bias), fold)
        x = parax_ops.gelu_up(x, cast(up))  # [B, L, C]
        conv2 = (cast(self.dwconv2.weight), cast(self.dwconv2.bias)) \
            if self.with_conv else (None, None)
        layer = None if self.layer_scale_init is None \
            else (cast(self.layer_scale), cast(self.layer_bias))
        res = None if self.res_scale_init is None \
            else (cast(self.res_scale), cast(self.res_bias))
        return parax_ops.out_block(x, shortcut, *conv2, layer, res,
                                   hw_shape, fold)

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

    def _cascade(self, x0, kernels, hw_shape, cast):
        """Routed depthwise cascade.

        Args:
            x0 (Tensor): [B, hidden_dim, H*W] cascade input, channels first.
            kernels (list[Tensor]): [B, hidden_dim, 1, k, k] per kernel size.
            cast (callable): Applied to the cascade scales.

        Returns:
            list[Tensor]: The outputs [B, hidden_dim, H*W], one per kernel.
        """
        B, R, L = x0.shape
        grid = x0.view(B, R, *hw_shape)
        outs, prev = [], None
        for i, kernel in enumerate(kernels):
            if i == 0 or self.layout == 'parallel':
                prev = dynamic_depthwise_conv(grid, kernel)
            elif self.layout == 'sequential':
                prev = dynamic_depthwise_conv(prev, kernel)
            else:  # a learned blend of the input and the previous output
                scales = cast(self.cascade_scale)[2 * i - 2:2 * i]
                prev = dynamic_depthwise_conv(grid, kernel, prev, scales)
            outs.append(prev.view(B, R, L))
        return outs

    def extra_repr(self):
        return (f'dim={self.dim}, hidden_dim={self.hidden_dim}, '
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
        expert_ratio (float): M = expert_ratio x blocks sharing a center
            (rounded, at least 1). Default: 1.0.
        num_experts (int | Sequence[int], optional): M per center, overriding
            ``expert_ratio`` (one value, or one per stage).
        blocks_per_center (int | Sequence[int], optional): Consecutive blocks
            sharing a center (one value, or one per stage; None = the whole
            stage). Default: None.
        expert_init (str): Expert init. Default: 'trunc_normal'.
        top_k (int | Sequence[int | None], optional): Sparse routing:
            experts kept per gate (one value, or one per stage; None keeps
            every expert).
        sites (Sequence[str], optional): Block sites; None: after every
            residual add of the host.
        **settings: The adapters' :class:`AdapterSettings` (``hidden_dim``,
            ``kernel_sizes``, ``with_conv``, ...). ``force_fp16`` is a no-op
            off CUDA, logged once per model at its first forward.
    """

    default_sites = ('residual', )
    width_setting = 'hidden_dim'
    # the reference trains its output norms on Swin and ConvNeXt
    # (``extra_norm`` in the freeze loop); its VMamba keeps them frozen
    # (``VMamba.output_norms_follow_method``)
    output_norms_trained = True

    def __init__(self,
                 expert_ratio: float = 1.0,
                 num_experts: Union[int, Sequence[int], None] = None,
                 blocks_per_center: Union[int, Sequence[Optional[int]],
                                          None] = None,
                 expert_init: str = 'trunc_normal',
                 top_k: Union[int, Sequence[Optional[int]], None] = None,
                 sites: Optional[Sequence[str]] = None,
                 **settings):
        super().__init__(sites)
        check_choice('ParaX', 'expert_init', expert_init, EXPERT_INITS)
        check_positive('ParaX', 'expert_ratio', expert_ratio)
        self.top_k = tuple(top_k) if isinstance(top_k, (list, tuple)) \
            else top_k
        for k in self.top_k if isinstance(self.top_k, tuple) \
                else (self.top_k, ):
            if k is not None:
                check_positive_int('ParaX', 'top_k', k, ' or None')
        #: the adapters' settings; ``top_k`` is resolved per stage
        self.settings = AdapterSettings.from_kwargs('ParaX', settings)
        self.expert_ratio = expert_ratio
        self.num_experts = num_experts
        self.blocks_per_center = blocks_per_center
        self.expert_init = expert_init

    @property
    def hidden_dim(self) -> int:
        return self.settings.hidden_dim

    @property
    def kernel_sizes(self) -> Tuple[int, ...]:
        return self.settings.kernel_sizes

    def _group_size(self, depth, stage):
        size = per_stage('ParaX', 'blocks_per_center', self.blocks_per_center,
                         stage)
        if size is None:
            return depth
        check_positive_int('ParaX', 'blocks_per_center', size, ' or None')
        return min(size, depth)

    def center_index(self, block: int, depth: int, stage: int) -> int:
        """The center that block ``block`` of ``stage`` routes into."""
        return block // self._group_size(depth, stage)

    def build_centers(self, dim: int, depth: int,
                      stage: int) -> nn.ModuleList:
        """Expert centers of a stage of ``depth`` blocks and width ``dim``."""
        size = self._group_size(depth, stage)
        top_k = per_stage('ParaX', 'top_k', self.top_k, stage)
        centers = nn.ModuleList()
        for start in range(0, depth, size):
            blocks = min(size, depth - start)
            m = per_stage('ParaX', 'num_experts', self.num_experts, stage)
            if m is None:
                m = max(1, int(round(self.expert_ratio * blocks)))
            check_positive_int('ParaX', 'num_experts', m)
            if top_k is not None and top_k > m:
                raise ValueError(
                    f'ParaX: top_k={top_k} exceeds the {m} experts of stage '
                    f'{stage} (a center shared by {blocks} blocks); lower '
                    'top_k or raise expert_ratio / num_experts')
            centers.append(
                ExpertCenter(dim, self.hidden_dim, m, self.kernel_sizes,
                             self.expert_init))
        return centers

    def build_adapter(self,
                      dim: int,
                      center: ExpertCenter,
                      stage: int = 0) -> ParaXAdapter:
        """An adapter of width ``dim`` of ``stage``, routing into
        ``center``."""
        top_k = per_stage('ParaX', 'top_k', self.top_k, stage)
        settings = dataclasses.replace(self.settings, top_k=top_k)
        return ParaXAdapter(dim, num_experts=center.num_experts,
                            **dataclasses.asdict(settings))

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
