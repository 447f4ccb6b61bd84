r"""SNELL: sparse tuning with kernelized LoRA (Shen et al., NeurIPS 2024).

Every frozen linear layer ``y = W_0 x + b_0`` gets a sparse update merged
from two low-rank matrices with a non-linear kernel:

.. math::

    \Delta W_{ij} = s\,\big(\lVert b^{(1)}_i - a^{(1)}_j\rVert_p
                  - \lVert b^{(2)}_i - a^{(2)}_j\rVert_p\big),\qquad
    \tau = \mathrm{quantile}_\rho\big(\lvert\Delta W\rvert\big),

.. math::

    y = W_0 x + b_0 + \mathrm{DropPath}\Big(\big(\Delta W \odot
        \mathrm{sg}(\lvert\Delta W\rvert) \odot
        \mathbb{1}[\lvert\Delta W\rvert > \tau]\big)\,
        \mathrm{Dropout}(x)\Big)

``A`` [C_in, q] holds the rows ``a_j`` (one per input), ``B`` [C_out, q]
the rows ``b_i`` (one per output); their first ``ceil(q/2)`` columns
(``(1)``) and the rest (``(2)``) feed two distance kernels combined with
the fixed coefficients ``+s`` and ``-s`` (``s = 0.1``), so the merged matrix
is not limited to rank ``q``. Competition-based sparsification keeps the
entries of ``ΔW`` whose magnitude exceeds the ``ρ``-quantile
(``sparsity``), recomputed from the current ``ΔW`` at every forward (no
schedule: the same ``ρ`` at every iteration); the kept entries are scaled
by their own stop-gradient magnitude ``sg(|ΔW|)``, as in the official code.
``ρ = 0`` applies ``ΔW`` as it is (the official code's KLoRA path). ``A``
and ``B`` start from a Kaiming-uniform (a = sqrt(5)) draw per kernel, so
the update is small but not zero at the start.

Placement: Swin ``q``, ``k``, ``v`` (one update per third of the fused
``qkv`` layer, as the official separate q/k/v modules), ``proj``, ``fc1``,
``fc2`` (``18 q C`` per block); ConvNeXt ``fc1``, ``fc2`` (``10 q C``);
VMamba ``in_proj``, ``out_proj``, ``fc1``, ``fc2`` (``16 q C``). The
official code puts dropout 0.1 on the input of every update but the
attention's output projection (here: ``proj`` and VMamba's ``out_proj``),
one mask shared by q, k and v, and an independent drop path 0.1 on every
update's output; it recomputes the merged matrix in the backward pass to
save memory (``with_cp``).

Memory and time (``with_cp``, the default): :class:`SparseKernelUpdate`
keeps only the update's dropped input, ``A``, ``B`` and τ for the backward
pass, which builds ``ΔW`` again from them but reuses τ (the quantile is a
selection of the stop-gradient magnitudes: the official code computes it on
``|ΔW|.detach()`` and it carries no gradient) and draws the dropout factors
again from their seed (no mask kept). The update is applied as the separate
term ``x ΔW`` beside the frozen layer, as in the official code.

Differences from the official code: an odd q gives the first kernel one
column more (the official code gives both ``q // 2``); dropout and drop path
default to 0 here (the configs set the official 0.1); VMamba is not in the
official code (``out_proj`` is treated as ``proj``); the sparsity of the
configs (0.5) is our choice, the official scripts tune it per task.

Paper: https://arxiv.org/abs/2411.01800; code:
https://github.com/ssfgunner/SNELL (``model/swin_timm.py``, class
``SNELL``).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from mmparax.registry import PEFT_METHODS
from .base import (
    LinearUpdate,
    PEFTMethod,
    check_choice,
    check_fraction,
    check_positive,
    is_positive_int,
)

#: placements, the first that the host offers: every frozen linear of
#: Swin, of VMamba, and ConvNeXt's pointwise linears
DEFAULT_TARGETS = (('qkv:qkv', 'proj', 'fc1', 'fc2'),
                   ('in_proj', 'out_proj', 'fc1', 'fc2'), ('fc1', 'fc2'))
#: the official code drops out the input of every update but the
#: attention's output projection's
NO_INPUT_DROPOUT = ('proj', 'out_proj')
KERNELS = dict(euclidean=2., manhattan=1.)


#: the largest input of ``torch.quantile``
QUANTILE_LIMIT = 2**24


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(x.flatten(), q)`` (linear interpolation), also for
    tensors above ``torch.quantile``'s size limit (then by ``kthvalue``)."""
    flat = x.flatten()
    if flat.numel() <= QUANTILE_LIMIT:
        return torch.quantile(flat, q)
    rank = torch.tensor(q, dtype=flat.dtype) * (flat.numel() - 1)
    below, above = int(rank), int(rank.ceil())
    low = torch.kthvalue(flat, below + 1).values
    high = low if above == below else torch.kthvalue(flat, above + 1).values
    return torch.lerp(low, high, (rank - below).to(flat.device))


def kernel_distances(A: torch.Tensor, B: torch.Tensor, split: int,
                     p: float):
    """A [P, in, q], B [P, out, q] -> two [P, in, out]: the p-norm
    distances of the rows over the first ``split`` columns and over the
    rest."""
    return (torch.cdist(A[..., :split], B[..., :split], p=p),
            torch.cdist(A[..., split:], B[..., split:], p=p))


def kept_magnitudes(weight: torch.Tensor, sparsity: float,
                    tau: Optional[torch.Tensor] = None):
    """Competition of the entries of each slice of ``weight`` [P, in, out]:
    ``sg(|ΔW|)`` where ``|ΔW| > τ`` of its slice, else 0, and τ [P], the
    ``sparsity``-quantile of the slice's magnitudes (a selection: no
    gradient) unless given."""
    kept = weight.detach().abs()
    if tau is None:
        tau = torch.stack([quantile(m, sparsity) for m in kept])
    return kept.masked_fill_(kept <= tau.view(-1, 1, 1), 0.), tau


def dropout_noise(shape: torch.Size, dtype: torch.dtype,
                  device: torch.device, rate: float,
                  seed: int) -> torch.Tensor:
    """Inverted dropout's factors (0 or 1 / (1 - rate)) of an input of
    ``shape``, drawn from ``seed`` so that the backward pass can draw them
    again."""
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.empty(shape, dtype=dtype, device=device)
    return noise.bernoulli_(1 - rate, generator=generator).div_(1 - rate)


class SparseKernelUpdate(torch.autograd.Function):
    """``Dropout(x) @ ΔW`` of :class:`SNELLUpdate` that saves only the
    dropped input, ``A``, ``B`` and the thresholds τ: the dense matrices are
    built again in the backward pass (the thresholds are not: the selection
    is not differentiated), the dropout factors drawn again from their seed.
    """

    @staticmethod
    def forward(ctx, x, A, B, split, p, scale, sparsity, rate, seed):
        """x [..., in], A [P, in, q], B [P, out, q] -> [..., P * out]."""
        near, far = kernel_distances(A, B, split, p)
        weight = near.mul_(scale).sub_(far.mul_(scale))
        del far
        tau = None
        if sparsity > 0:
            kept, tau = kept_magnitudes(weight, sparsity)
            weight.mul_(kept)
            del kept
        ctx.noise = x.shape, x.dtype, rate, seed
        if rate > 0:
            x = x * dropout_noise(x.shape, x.dtype, x.device, rate, seed)
        device = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device),
                        torch.get_autocast_dtype(device))
        if ctx.autocast[0]:  # what the matmul reads: half the bytes
            x = x.to(ctx.autocast[1])
        ctx.save_for_backward(x, A, B, tau)
        ctx.kernel = split, p, scale
        P, n_in, n_out = weight.shape
        return x @ weight.transpose(0, 1).reshape(n_in, P * n_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, A, B, tau = ctx.saved_tensors
        split, p, scale = ctx.kernel
        shape, x_dtype, rate, seed = ctx.noise
        needs_x, needs_a, needs_b = ctx.needs_input_grad[:3]
        grad_x = grad_a = grad_b = None
        device = x.device.type
        enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype, enabled=enabled):
            with torch.enable_grad():
                A, B = A.detach().requires_grad_(), B.detach().requires_grad_()
                near, far = kernel_distances(A, B, split, p)
            weight = near.detach() * scale
            weight.sub_(far.detach() * scale)
            kept = None if tau is None else kept_magnitudes(weight, 0, tau)[0]
            P, n_in, n_out = weight.shape
            if needs_x:
                merged = weight if kept is None else weight.mul_(kept)
                flat = merged.transpose(0, 1).reshape(n_in, P * n_out)
                grad_x = grad_y @ flat.T
                if rate > 0:
                    grad_x = grad_x * dropout_noise(shape, x_dtype, x.device,
                                                    rate, seed)
            if needs_a or needs_b:
                grad_w = x.reshape(-1, n_in).T @ grad_y.reshape(-1, P * n_out)
                # in the kernel's dtype (float32 under float16 autocast)
                grad_w = grad_w.view(n_in, P, n_out).transpose(0, 1).to(
                    weight.dtype)
                if kept is not None:
                    grad_w.mul_(kept)
                grad_w.mul_(scale)
                inputs = [t for t, n in ((A, needs_a), (B, needs_b)) if n]
                grads = torch.autograd.grad((near, far), inputs,
                                            (grad_w, grad_w.neg()))
                grad_a = grads[0] if needs_a else None
                grad_b = grads[-1] if needs_b else None
        return grad_x, grad_a, grad_b, None, None, None, None, None, None


class SNELLUpdate(LinearUpdate):
    """The sparse kernelized update of one frozen linear layer, on one or
    more equal output slices (the thirds of a fused qkv layer).

    Args:
        in_features (int): Inputs of the frozen layer.
        out_features (int): Outputs of each slice.
        rank (int): q, the columns of ``A`` and ``B`` (ceil(q/2) for the
            first kernel, floor(q/2) for the second).
        starts (Sequence[int]): First output of each slice. Default: (0,).
        sparsity (float): ρ, the fraction of entries of each slice's
            ``ΔW`` set to zero. Default: 0.5.
        p (float): Norm of the distance kernels. Default: 2.
        scale (float): s. Default: 0.1.
        dropout (float): Dropout on the update's input. Default: 0.
        drop_path (float): Drop path on each slice's update. Default: 0.
        with_cp (bool): Keep only the dropped input, ``A``, ``B`` and τ
            for the backward pass, which builds ``ΔW`` again
            (:class:`SparseKernelUpdate`); False: autograd keeps the dense
            matrices. Default: True.

    Parameters: ``A`` [P, C_in, q], ``B`` [P, C_out, q] for P slices.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 rank: int,
                 starts: Sequence[int] = (0, ),
                 sparsity: float = 0.5,
                 p: float = 2.,
                 scale: float = 0.1,
                 dropout: float = 0.,
                 drop_path: float = 0.,
                 with_cp: bool = True):
        super().__init__(out_features, starts)
        self.rank = rank
        self.split = (rank + 1) // 2
        self.sparsity, self.p, self.scale = sparsity, p, scale
        self.drop_path, self.with_cp = drop_path, with_cp
        parts = len(self.starts)
        self.A = nn.Parameter(torch.empty(parts, in_features, rank))
        self.B = nn.Parameter(torch.empty(parts, out_features, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # nn.init.kaiming_uniform_(a=sqrt(5)) of the official [2, n, q/2]
        # tensors: U(-b, b) with b = 1 / sqrt(n * q/2) per kernel
        for factor in (self.A, self.B):
            n = factor.shape[1]
            for cols in (slice(None, self.split), slice(self.split, None)):
                width = factor[..., cols].shape[-1]
                bound = 1 / math.sqrt(n * width)
                factor[..., cols].uniform_(-bound, bound)

    @torch.no_grad()
    def switch_off(self):
        self.A.zero_()
        self.B.zero_()

    def kernel_matrix(self) -> torch.Tensor:
        """[P, C_in, C_out]: ``ΔW`` of each slice (transposed), before
        sparsification."""
        near, far = kernel_distances(self.A, self.B, self.split, self.p)
        return self.scale * near - self.scale * far

    def sparsify(self, weight: torch.Tensor) -> torch.Tensor:
        """Competition: keep the entries above the ρ-quantile of each
        slice's magnitudes, scaled by their stop-gradient magnitude."""
        if self.sparsity == 0:
            return weight
        return weight * kept_magnitudes(weight, self.sparsity)[0]

    def merged_weight(self) -> torch.Tensor:
        """[P, C_in, C_out]: the sparse update of each slice."""
        return self.sparsify(self.kernel_matrix())

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] (channels last) -> [..., P, out]."""
        trained = self.A.requires_grad or self.B.requires_grad
        if self.with_cp and torch.is_grad_enabled() and trained:
            rate = self.dropout.p if isinstance(self.dropout, nn.Dropout) \
                and self.training else 0.
            seed = int(torch.randint(2**62, ())) if rate > 0 else 0
            y = SparseKernelUpdate.apply(x, self.A, self.B, self.split,
                                         self.p, self.scale, self.sparsity,
                                         rate, seed)
        else:
            weight = self.merged_weight()  # [P, in, out]
            P, n_in, n_out = weight.shape
            y = self.dropout(x) @ weight.transpose(0, 1).reshape(
                n_in, P * n_out)
        y = y.unflatten(-1, (len(self.starts), self.out_features))
        if self.training and self.drop_path > 0:
            keep = 1 - self.drop_path
            shape = (y.shape[0], ) + (1, ) * (y.dim() - 3) + (y.shape[-2], 1)
            y = y * (keep + torch.rand(shape, dtype=y.dtype,
                                       device=y.device)).floor_().div_(keep)
        return y

    def weight_slices(self) -> torch.Tensor:
        """[P, out, in]: the sparse update of each slice."""
        return self.merged_weight().transpose(1, 2)


@PEFT_METHODS.register_module()
class SNELL(PEFTMethod):
    """SNELL on frozen linear layers named by the host's layer aliases.

    Args:
        rank (int): q, the low-rank width (2 or more; ``q_dim`` /
            ``low_rank_dim`` of the official code, split equally between its
            two kernels; an odd q gives the first kernel one more column).
            Default: 8.
        sparsity (float): ρ in [0, 1), the fraction of each ``ΔW`` set to
            zero (``init_thres`` of the official code; 0 turns the
            sparsification off). Default: 0.5.
        kernel (str): ``'euclidean'`` (the official default, ``norm_p=2``)
            or ``'manhattan'`` (``norm_p=1``): the distance of both
            kernels. Default: 'euclidean'.
        scale (float): s, the kernels' coefficients are +s and -s.
            Default: 0.1.
        dropout (float): Dropout on the updates' input (not on ``proj`` /
            ``out_proj``); the official scripts use 0.1. Default: 0.
        drop_path (float): Drop path on every update's output; the official
            scripts use 0.1. Default: 0.
        targets (Sequence[str], optional): Layer aliases of the host (on a
            fused ``qkv`` alias, ``'qkv:qkv'`` gives q, k and v one update
            each; ``'qkv'`` alone: one update of the whole layer), or
            ``'re:<regex>'`` patterns over module names (see
            ``PEFTMethod.linear_targets``). None: the
            first of ``('qkv:qkv', 'proj', 'fc1', 'fc2')``, ``('in_proj',
            'out_proj', 'fc1', 'fc2')``, ``('fc1', 'fc2')`` the host offers.
        with_cp (bool): Build the merged matrices again in the backward
            pass, keeping only the updates' inputs (memory; as the official
            code). Default: True.
    """

    default_targets = DEFAULT_TARGETS
    width_setting = 'rank'

    def __init__(self,
                 rank: int = 8,
                 sparsity: float = 0.5,
                 kernel: str = 'euclidean',
                 scale: float = 0.1,
                 dropout: float = 0.,
                 drop_path: float = 0.,
                 targets: Optional[Sequence[str]] = None,
                 with_cp: bool = True):
        super().__init__(sites=())
        if not is_positive_int(rank) or rank < 2:
            raise ValueError('SNELL: rank must be an integer of 2 or more '
                             f'(one column per kernel at least), got {rank!r}')
        check_fraction(self.name, 'sparsity', sparsity)
        check_choice(self.name, 'kernel', kernel, KERNELS)
        check_positive(self.name, 'scale', scale)
        check_fraction(self.name, 'dropout', dropout)
        check_fraction(self.name, 'drop_path', drop_path)
        self.rank, self.sparsity, self.kernel = rank, float(sparsity), kernel
        self.scale, self.dropout = float(scale), float(dropout)
        self.drop_path, self.with_cp = float(drop_path), bool(with_cp)
        self.targets = self.check_targets(targets)

    def attach(self, host) -> None:
        for name, layer, alias, parts, channels_first in \
                self.linear_targets(host):
            # the attention's output projection, by alias or by pattern
            no_dropout = alias in NO_INPUT_DROPOUT or \
                name.rsplit('.', 1)[-1] in NO_INPUT_DROPOUT
            out_features, in_features = layer.weight.shape[:2]
            child, width, starts = 'snell', out_features, (0, )
            if parts is not None:  # one update of the thirds named
                child = 'snell_' + ''.join(p for p, _, _ in parts)
                width, starts = parts[0][2], tuple(s for _, s, _ in parts)
            update = SNELLUpdate(
                in_features,
                width,
                self.rank,
                starts=starts,
                sparsity=self.sparsity,
                p=KERNELS[self.kernel],
                scale=self.scale,
                dropout=0. if no_dropout else self.dropout,
                drop_path=self.drop_path,
                with_cp=self.with_cp)
            update.hook_into(layer, child, channels_first)
