r"""Selective scan (the S6 recurrence of Mamba / VMamba) in plain PyTorch.

For every channel ``c`` of group ``g`` (``c`` in ``[g*E, (g+1)*E)``) and
every state ``n``:

.. math::

    \delta_t = \mathrm{softplus}(\delta^{raw}_t + b_c),\quad
    h_t = e^{\delta_t A_{cn}} h_{t-1} + \delta_t B_{gnt} u_t,\quad
    y_t = \sum_n C_{gnt} h_{tn} + D_c u_t

with ``h_{-1} = 0``. ``B`` and ``C`` are shared by the E channels of a group
(VMamba: one group per scan direction) and stay broadcast, never repeated.

:func:`selective_scan` runs in fp32 whatever the input dtype. Forward and
backward are linear in the sequence length: the recurrence is split into
chunks of about sqrt(L) steps, scanned in parallel over chunks, then joined
by a scan over chunk ends. Joining only multiplies decays
``exp(delta * A)`` in (0, 1]; nothing is divided by a cumulative decay, so
long sequences cannot overflow. The backward pass is the same recurrence run
backwards (hand-written, no autograd graph over time steps).

On a GPU, when ``mamba_ssm``'s CUDA kernel can be imported, tensors on that
device go to it instead.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

SOFTPLUS_THRESHOLD = 20.0  # as the CUDA kernel: softplus(x) = x above it

_cuda_scan = None


def _cuda_kernel():
    """``mamba_ssm``'s CUDA selective scan, or None if not importable."""
    global _cuda_scan
    if _cuda_scan is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import (
                selective_scan_fn,
            )
            _cuda_scan = selective_scan_fn
        except Exception:  # missing package or CUDA extension
            _cuda_scan = False
    return _cuda_scan or None


def _linear_scan_(a: torch.Tensor,
                  x: torch.Tensor,
                  reverse: bool = False,
                  chunk: Optional[int] = None) -> torch.Tensor:
    """In place ``x[b, t] += a[b, t] * x[b, t - 1]`` along dim 1.

    With ``reverse``, ``x[b, t] += a[b, t] * x[b, t + 1]`` instead. The
    state before the first step is 0.

    Args:
        a (Tensor): [B, L, ...] decays in [0, 1]; overwritten (workspace).
        x (Tensor): [B, L, ...] inputs, replaced by the states.
        reverse (bool): Run from the last step to the first.
        chunk (int, optional): Steps per chunk. Default: about sqrt(L).

    Returns:
        Tensor: ``x``.
    """
    for b in range(x.shape[0]):
        _scan_sequence_(a[b].flatten(1), x[b].flatten(1), reverse, chunk)
    return x


def _scan_sequence_(a, x, reverse, chunk):
    """:func:`_linear_scan_` of one sample: a, x [L, M] contiguous."""
    L = x.shape[0]
    step = -1 if reverse else 1
    T = chunk or max(1, math.isqrt(L))
    n = L // T
    if n <= 1 or T == 1:
        for t in (range(L - 2, -1, -1) if reverse else range(1, L)):
            x[t].addcmul_(a[t], x[t - step])
        return
    rest = L - n * T
    # whole chunks; the leftover steps come last in scan order
    main = slice(rest, L) if reverse else slice(0, n * T)
    xs = x[main].view(n, T, -1)
    As = a[main].view(n, T, -1)
    # 1. every chunk from a zero state, all chunks at once; As becomes the
    #    decay from the chunk's start (products of values in [0, 1])
    for i in (range(T - 2, -1, -1) if reverse else range(1, T)):
        xs[:, i].addcmul_(As[:, i], xs[:, i - step])
        As[:, i].mul_(As[:, i - step])
    end = 0 if reverse else -1
    # 2. true state at each chunk's end, chunk after chunk
    for c in (range(n - 2, -1, -1) if reverse else range(1, n)):
        xs[c, end].addcmul_(As[c, end], xs[c - step, end])
    # 3. carry the previous chunk's end state into its other steps
    if reverse:
        xs[:-1, 1:].addcmul_(As[:-1, 1:], xs[1:, :1])
    else:
        xs[1:, :-1].addcmul_(As[1:, :-1], xs[:-1, -1:])
    for t in (range(rest - 1, -1, -1) if reverse else range(n * T, L)):
        x[t].addcmul_(a[t], x[t - step])


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, L] -> [B, L, C] contiguous fp32.

    A view when ``x`` is fp32 and stored time-major (as
    ``x.transpose(1, 2)`` of a contiguous [B, L, C]); else a copy.
    """
    view = x.transpose(1, 2)
    if view.is_contiguous() and x.dtype == torch.float32:
        return view
    out = x.new_empty(view.shape, dtype=torch.float32)
    for b in range(x.shape[0]):  # 2-D transposes take a fast path
        out[b].copy_(view[b])
    return out


def _channels(x: torch.Tensor, like: Optional[torch.Tensor] = None):
    """[B, L, ...] -> [B, C, L], C the flattened trailing dims.

    A view (stored time-major), unless ``like`` is stored channel-major:
    then a contiguous copy, so that gradients match their inputs' layout.
    """
    view = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
    if like is None or like.transpose(1, 2).is_contiguous():
        return view
    out = torch.empty_like(view, memory_format=torch.contiguous_format)
    for b in range(x.shape[0]):
        out[b].copy_(view[b])
    return out


def _groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, L, G*E] -> [B, L, G, E, 1] view."""
    return x.view(x.shape[0], x.shape[1], groups, -1, 1)


def _per_step(x: torch.Tensor) -> torch.Tensor:
    """B or C [B, G, N, L] -> [B, L, G, 1, N] fp32 (broadcast over E)."""
    return x.float().permute(0, 3, 1, 2).unsqueeze(3).contiguous()


def _decays(d_t, A, groups):
    """exp(d * A): d_t [B, L, G*E], A [G*E, N] -> [B, L, G, E, N]."""
    N = A.shape[1]
    d = _groups(d_t, groups)
    out = d_t.new_empty(*d.shape[:4], N)
    torch.mul(d, A.float().view(groups, -1, N), out=out)
    return out.exp_()


def _sum_states(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last (state) dim; a view when N = 1."""
    return x[..., 0] if x.shape[-1] == 1 else x.sum(-1)


class _SelectiveScan(torch.autograd.Function):
    """Selective scan with a hand-written, linear-time backward.

    Internally time runs along dim 1: [B, L, G, E, N].
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus, chunk):
        G = B.shape[1]
        raw = delta.float() + delta_bias.float()[:, None]
        d_t = _tokens(
            F.softplus(raw, threshold=SOFTPLUS_THRESHOLD) if softplus
            else raw)  # [B, L, G*E]
        u_t = _tokens(u)
        a = _decays(d_t, A, G)
        h = torch.empty_like(a)
        torch.mul(_groups(d_t * u_t, G), _per_step(B), out=h)
        _linear_scan_(a, h, chunk=chunk)
        del a
        y = _sum_states(h * _per_step(C))  # [B, L, G, E]
        y = _channels(y.addcmul_(_groups(u_t, G)[..., 0],
                                 D.float().view(G, -1)))
        ctx.save_for_backward(u, d_t, raw if softplus else None, A, B, C, D,
                              delta_bias, h)
        ctx.chunk, ctx.delta_dtype = chunk, delta.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        u, d_t, raw, A, B, C, D, delta_bias, h = ctx.saved_tensors
        G, N = B.shape[1], A.shape[1]
        u_t = _groups(_tokens(u), G)[..., 0]  # [B, L, G, E]
        gy_t = _groups(_tokens(grad_y), G)[..., 0]
        d = _groups(d_t, G)[..., 0]

        # dh[t] = gy[t] C[t] + a[t+1] dh[t+1]: the recurrence run backwards
        a = _decays(d_t, A, G)
        dh = torch.empty_like(h)
        torch.mul(gy_t[..., None], _per_step(C), out=dh)
        a_next = torch.empty_like(a)
        a_next[:, :-1] = a[:, 1:]
        a_next[:, -1] = 0
        _linear_scan_(a_next, dh, reverse=True, chunk=ctx.chunk)
        del a_next

        # gradient w.r.t. d*A (inside the exponential); zero at t = 0
        g_dA = a
        g_dA[:, 0] = 0
        g_dA[:, 1:].mul_(dh[:, 1:]).mul_(h[:, :-1])
        grad_A = (g_dA * d[..., None]).sum((0, 1)).view(-1, N)
        g_d = _sum_states(g_dA.mul_(A.float().view(G, -1, N)))
        dh_B = _sum_states(dh * _per_step(B))  # [B, L, G, E]
        g_d.addcmul_(dh_B, u_t)
        grad_u = _channels(
            dh_B.mul_(d).addcmul_(gy_t, D.float().view(G, -1)), like=u)
        grad_B = (dh * (d * u_t)[..., None]).sum(3).permute(0, 2, 3, 1)
        del dh
        grad_C = (h * gy_t[..., None]).sum(3).permute(0, 2, 3, 1)
        grad_D = (gy_t * u_t).sum((0, 1)).view(-1)
        grad_delta = _channels(g_d, like=raw if raw is not None else u)
        del g_d, g_dA, a
        if raw is not None:
            # softplus' = sigmoid, which is 1.0 in fp32 above the threshold
            grad_delta.mul_(torch.sigmoid(raw))
        grad_bias = grad_delta.sum((0, 2))

        def cast(grad, like):
            return grad.to(like.dtype)

        # grad_u and grad_delta stay stored time-major, like the output
        return (cast(grad_u, u), grad_delta.to(ctx.delta_dtype),
                cast(grad_A, A), cast(grad_B, B).contiguous(),
                cast(grad_C, C).contiguous(), cast(grad_D, D),
                cast(grad_bias, delta_bias), None, None)


def _check_shapes(u, delta, A, B, C, D, delta_bias):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError('u and delta must both be [B, G*E, L], got '
                         f'{tuple(u.shape)} and {tuple(delta.shape)}')
    Bsz, KE, L = u.shape
    if A.dim() != 2 or A.shape[0] != KE:
        raise ValueError(f'A must be [{KE}, N], got {tuple(A.shape)}')
    N = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.dim() != 4 or t.shape[0] != Bsz or t.shape[2:] != (N, L) \
                or KE % t.shape[1]:
            raise ValueError(
                f'{name} must be [{Bsz}, G, {N}, {L}] with G dividing {KE}, '
                f'got {tuple(t.shape)}')
    if B.shape[1] != C.shape[1]:
        raise ValueError('B and C must have the same number of groups')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (KE, ):
            raise ValueError(f'{name} must be [{KE}], got {tuple(t.shape)}')


def selective_scan(u: torch.Tensor,
                   delta: torch.Tensor,
                   A: torch.Tensor,
                   B: torch.Tensor,
                   C: torch.Tensor,
                   D: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None,
                   delta_softplus: bool = True,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """Selective scan, differentiable w.r.t. every tensor argument.

    Args:
        u (Tensor): [B, G*E, L] inputs.
        delta (Tensor): [B, G*E, L] step sizes before bias and softplus.
        A (Tensor): [G*E, N] state matrix (negative for a stable scan).
        B (Tensor): [B, G, N, L] input projections, shared by a group.
        C (Tensor): [B, G, N, L] output projections, shared by a group.
        D (Tensor, optional): [G*E] skip weights.
        delta_bias (Tensor, optional): [G*E] added to ``delta``.
        delta_softplus (bool): Apply softplus (threshold 20) to the step
            sizes. Default: True.
        chunk_size (int, optional): Steps per chunk of the CPU scan.
            Default: about sqrt(L).

    Returns:
        Tensor: [B, G*E, L] outputs in fp32, stored time-major (a transposed
        view of [B, L, G*E]); inputs stored that way are read without a copy.
    """
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    if u.is_cuda and _cuda_kernel() is not None:
        return _cuda_kernel()(
            u, delta, A, B, C, D, None, delta_bias,
            delta_softplus).float()
    KE = u.shape[1]
    if D is None:
        D = u.new_zeros(KE)
    if delta_bias is None:
        delta_bias = u.new_zeros(KE)
    return _SelectiveScan.apply(u, delta, A, B, C, D, delta_bias,
                                delta_softplus, chunk_size)


def selective_scan_reference(u: torch.Tensor,
                             delta: torch.Tensor,
                             A: torch.Tensor,
                             B: torch.Tensor,
                             C: torch.Tensor,
                             D: Optional[torch.Tensor] = None,
                             delta_bias: Optional[torch.Tensor] = None,
                             delta_softplus: bool = True,
                             dtype: torch.dtype = torch.float64
                             ) -> torch.Tensor:
    """The scan one time step at a time under autograd (tests, benchmarks).

    Same arguments and shapes as :func:`selective_scan`; computes in
    ``dtype``. Indexing a step per iteration makes its backward quadratic in
    L: only for short sequences.
    """
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    E = u.shape[1] // B.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta, threshold=SOFTPLUS_THRESHOLD)
    B = B.repeat_interleave(E, dim=1)  # [B, G*E, N, L]
    C = C.repeat_interleave(E, dim=1)
    decay = torch.exp(delta[:, :, None] * A[None, :, :, None])
    drive = (delta * u)[:, :, None] * B
    h = u.new_zeros(*decay.shape[:3])
    ys = []
    for t in range(u.shape[2]):
        h = decay[..., t] * h + drive[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(dtype)[:, None]
    return y
