"""The ParaX adapter's steps as autograd functions that keep little.

Each function keeps the outputs of the adapter's matmuls and convolutions
that its backward pass needs and recomputes the cheap elementwise work from
them (LayerNorm output, the cascade blends, the scale-attention logits and
mixture, the GELU, the residual sums). Two outputs are recomputed once for
the function that reads them: the stem's (LayerNorm and 3x3 conv, from the
adapter input) and, with ``fold``, the up projection's (from the GELU
input). Tokens are
[B, L, C] (a channels-last [B, C, H, W] map), the bottleneck [B, R, L].

``fold``: the float32 / float64 order of operations (identities folded into
the conv and projection weights, LayerNorm gamma into its affine
parameters); without it the reference's float16 order (``force_fp16``:
the LayerNorm in float32, the sums apart, the softmax in float32).

Under autocast the same maths runs as plain differentiable ops, so autocast
picks every op's dtype as it does for any module.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _lean(t: torch.Tensor) -> bool:
    return not torch.is_autocast_enabled(t.device.type)


def _producer(t, cls):
    """The autograd node of function ``cls`` that made ``t``, or None."""
    node = t.grad_fn
    return node if getattr(node, '_forward_cls', None) is cls else None


def _grid(t, hw_shape):
    """Tokens [B, L, C] as a channels-last [B, C, H, W] view."""
    B, L, C = t.shape
    return t.reshape(B, *hw_shape, C).permute(0, 3, 1, 2)


def _tokens(t):
    """A channels-last [B, C, H, W] map as tokens [B, L, C] (a view)."""
    B, C, H, W = t.shape
    return t.permute(0, 2, 3, 1).reshape(B, H * W, C)


def _with_identity(weight):
    """Depthwise weight [C, 1, k, k] plus a centred identity kernel."""
    k = weight.shape[-1]
    identity = torch.zeros_like(weight[0, 0])
    identity[k // 2, k // 2] = 1
    return weight + identity


def residual_dwconv(x, weight, bias, hw_shape, fold=True):
    """``x + dwconv(x)`` (3x3 depthwise, "same") on tokens [B, L, C]."""
    grid = _grid(x, hw_shape)
    pad = weight.shape[-1] // 2
    C = weight.shape[0]
    if fold:
        out = F.conv2d(grid, _with_identity(weight), bias, padding=pad,
                       groups=C)
    else:
        out = grid + F.conv2d(grid, weight, bias, padding=pad, groups=C)
    return _tokens(out)


def _stem(x, norm_weight, norm_bias, gamma, conv_weight, conv_bias,
          hw_shape, eps, fold):
    C = x.shape[-1]
    if fold:  # LN(x) * gamma + x, gamma folded into the affine parameters
        x = F.layer_norm(x, (C, ), norm_weight * gamma, norm_bias * gamma,
                         eps) + x
    else:
        x = F.layer_norm(x.float(), (C, ), norm_weight.float(),
                         norm_bias.float(), eps) * gamma + x
    if conv_weight is not None:
        if fold:
            x = residual_dwconv(x, conv_weight, conv_bias, hw_shape)
        else:  # the conv in the input's dtype, the sum in float32
            dtype = gamma.dtype
            grid = _grid(x, hw_shape)
            x = _tokens(grid + F.conv2d(
                grid.to(dtype), conv_weight, conv_bias, padding=1,
                groups=x.shape[-1]))
    return x


class _Stem(torch.autograd.Function):
    """``x -> dwconv1(LN(x) * gamma + x)`` with its residual; keeps only
    ``x`` (its output is recomputed for :class:`_Down`)."""

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, gamma, conv_weight,
                conv_bias, hw_shape, eps, fold):
        ctx.save_for_backward(x, norm_weight, norm_bias, gamma, conv_weight,
                              conv_bias)
        ctx.args = (hw_shape, eps, fold)
        ctx.graph = None
        return _stem(x, norm_weight, norm_bias, gamma, conv_weight,
                     conv_bias, hw_shape, eps, fold).to(gamma.dtype)

    @staticmethod
    def recompute(ctx):
        """The stem's forward again, differentiable: (leaves, output)."""
        if ctx.graph is None:
            leaves = [
                None if t is None else t.detach().requires_grad_(need)
                for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)
            ]
            with torch.enable_grad():
                out = _stem(*leaves, *ctx.args)
                out = out.to(leaves[3].dtype)
            ctx.graph = (leaves, out)
        return ctx.graph

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        leaves, out = _Stem.recompute(ctx)
        ctx.graph = None
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return (*(next(grads) if t is not None and t.requires_grad else None
                  for t in leaves), None, None, None)


def stem(x, norm_weight, norm_bias, gamma, conv_weight, conv_bias,
         hw_shape, eps, fold=True):
    """The adapter's input block: ``x' = LN(x) * gamma + x``, then
    ``x' + dwconv1(x')`` (without ``conv_weight``: ``x'``).

    Args:
        x (Tensor): [B, L, C] tokens.
        norm_weight, norm_bias, gamma (Tensor): [C].
        conv_weight (Tensor, optional): [C, 1, 3, 3]; conv_bias: [C].

    Returns:
        Tensor: [B, L, C] in the dtype of ``gamma``.
    """
    if not _lean(x):
        return _stem(x, norm_weight, norm_bias, gamma, conv_weight,
                     conv_bias, hw_shape, eps, fold).to(gamma.dtype)
    return _Stem.apply(x, norm_weight, norm_bias, gamma, conv_weight,
                       conv_bias, hw_shape, eps, fold)


class _Down(torch.autograd.Function):
    """Per-sample down projection; the features come back from the stem's
    recomputation instead of being kept."""

    @staticmethod
    def forward(ctx, x, down):
        ctx.stem = _producer(x, _Stem) if ctx.needs_input_grad[1] else None
        if ctx.stem is not None:
            ctx.save_for_backward(down)
        else:
            ctx.save_for_backward(down, x)
        return torch.bmm(down, x.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        down, *x = ctx.saved_tensors
        grad_x = grad_down = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_out.transpose(1, 2), down)
        if ctx.needs_input_grad[1]:
            x = x[0] if ctx.stem is None \
                else _Stem.recompute(ctx.stem)[1].detach()
            grad_down = torch.bmm(grad_out, x)
        return grad_x, grad_down


def down_project(x, down):
    """x: [B, L, C], down: [B, R, C] -> [B, R, L]."""
    if not _lean(x):
        return torch.bmm(down, x.transpose(1, 2))
    return _Down.apply(x, down)


def _mix(x0, outs, sa_weight, sa_bias, fold):
    """The bottleneck after the cascade: ``x0 + mixture of outs`` and the
    scale-attention weights [B, K, L] (None without them)."""
    if not outs:  # without a conv branch the reference adds x0 to itself
        return x0 + x0, None
    if len(outs) == 1:
        return outs[0] + x0, None
    if sa_weight is None:
        return sum(outs) / len(outs) + x0, None
    total = outs[0] + outs[1]
    for o in outs[2:]:
        total = total + o
    logits = torch.matmul(sa_weight, total).add_(sa_bias[:, None])
    weights = logits.softmax(dim=1) if fold \
        else logits.softmax(dim=1, dtype=torch.float32)
    mixed = torch.addcmul(x0, outs[0], weights[:, :1])
    for i, o in enumerate(outs[1:], 1):
        mixed = mixed.addcmul_(o, weights[:, i:i + 1])
    return mixed, weights


def _project(x, weight, bias, fold):
    """``x + proj(x)`` for x: [B, R, L]."""
    if fold:  # one matmul
        eye = torch.eye(weight.shape[0], dtype=x.dtype, device=x.device)
        return torch.baddbmm(bias[:, None], (weight + eye).expand(
            x.shape[0], -1, -1), x)
    x = x.to(weight.dtype)
    return x + (torch.matmul(weight, x) + bias[:, None])


class _MixProject(torch.autograd.Function):
    """Scale attention, mixture, residual and projection; keeps the cascade
    outputs and the attention weights, recomputes the mixture and the
    attention's input."""

    @staticmethod
    def forward(ctx, fold, sa_weight, sa_bias, proj_weight, proj_bias, x0,
                *outs):
        mixed, weights = _mix(x0, outs, sa_weight, sa_bias, fold)
        ctx.fold = fold
        ctx.save_for_backward(sa_weight, weights, proj_weight, x0, *outs)
        return _project(mixed, proj_weight, proj_bias, fold)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        sa_weight, weights, proj_weight, x0, *outs = ctx.saved_tensors
        K = len(outs)
        if weights is None:
            mixed = _mix(x0, outs, None, None, ctx.fold)[0]
        else:
            mixed = torch.addcmul(x0, outs[0], weights[:, :1])
            for i, o in enumerate(outs[1:], 1):
                mixed.addcmul_(o, weights[:, i:i + 1])
        grad_pw = torch.matmul(grad, mixed.to(grad.dtype).transpose(
            1, 2)).sum(0)
        grad_pb = grad.sum((0, 2))
        grad_mixed = torch.matmul(proj_weight.t(), grad) + grad
        grad_sw = grad_sb = None
        if K == 0:
            grad_x0, grad_outs = grad_mixed + grad_mixed, []
        elif K == 1:
            grad_x0, grad_outs = grad_mixed, [grad_mixed]
        elif weights is None:
            grad_x0 = grad_mixed
            grad_outs = [grad_mixed / K] * K
        else:
            # the softmax in its own dtype (float32 under force_fp16)
            grad_x0, w = grad_mixed, weights
            grad_w = torch.cat([(grad_mixed * o).sum(
                1, keepdim=True, dtype=w.dtype) for o in outs], dim=1)
            grad_logits = w * (grad_w - (w * grad_w).sum(1, keepdim=True))
            total = outs[0] + outs[1]
            for o in outs[2:]:
                total = total + o
            grad_sw = torch.matmul(grad_logits, total.to(w.dtype).transpose(
                1, 2)).sum(0).to(sa_weight.dtype)
            grad_sb = grad_logits.sum((0, 2)).to(sa_weight.dtype)
            grad_total = torch.matmul(sa_weight.t().to(w.dtype), grad_logits)
            grad_outs = [
                torch.addcmul(grad_total, grad_mixed, w[:, i:i + 1])
                for i in range(K)
            ]
        dtype = x0.dtype
        return (None, grad_sw, grad_sb, grad_pw, grad_pb,
                grad_x0.to(dtype), *(g.to(dtype) for g in grad_outs))


def mix_project(x0: torch.Tensor,
                outs: Sequence[torch.Tensor],
                sa_weight: Optional[torch.Tensor],
                sa_bias: Optional[torch.Tensor],
                proj_weight: torch.Tensor,
                proj_bias: torch.Tensor,
                fold: bool = True) -> torch.Tensor:
    """``m + proj(m)``, ``m = x0 + mixture of the cascade outputs``.

    The mixture is the scale-attention softmax of ``sa_weight @ sum(outs)``
    with ``sa_weight`` [K, R] and K >= 2 outputs, else their average (one
    output: itself; none: ``x0`` again).

    Args:
        x0 (Tensor): [B, R, L] cascade input.
        outs (list[Tensor]): K cascade outputs [B, R, L].
        proj_weight (Tensor): [R, R]; proj_bias: [R].

    Returns:
        Tensor: [B, R, L] (in ``proj_weight``'s dtype).
    """
    if not _lean(x0):
        mixed, _ = _mix(x0, outs, sa_weight, sa_bias, fold)
        return _project(mixed, proj_weight, proj_bias, fold)
    return _MixProject.apply(fold, sa_weight, sa_bias, proj_weight,
                             proj_bias, x0, *outs)


def _gelu_up(x, up):
    return torch.bmm(F.gelu(x).transpose(1, 2), up.transpose(1, 2))


class _GeluUp(torch.autograd.Function):
    """GELU and per-sample up projection; keeps the GELU input only (its
    output is recomputed for :class:`_OutBlock`)."""

    @staticmethod
    def forward(ctx, x, up):
        ctx.save_for_backward(x, up)
        ctx.cache = None
        return _gelu_up(x, up)

    @staticmethod
    def recompute(ctx):
        """``(x, up, GELU(x), output)`` again, computed once (the saved
        tensors are read once: checkpointing allows no more)."""
        if ctx.cache is None:
            x, up = ctx.saved_tensors
            act = F.gelu(x)
            ctx.cache = (x, up, act,
                         torch.bmm(act.transpose(1, 2), up.transpose(1, 2)))
        return ctx.cache

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if ctx.cache is None:
            x, up = ctx.saved_tensors
            act = F.gelu(x)
        else:
            x, up, act, _ = ctx.cache
            ctx.cache = None
        grad_x = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = torch.bmm(grad_out.transpose(1, 2),
                                act.transpose(1, 2))
        if ctx.needs_input_grad[0]:
            grad_x = aten.gelu_backward(
                torch.bmm(grad_out, up).transpose(1, 2), x)
        return grad_x, grad_up


def gelu_up(x, up):
    """x: [B, R, L], up: [B, C, R] -> ``(up @ GELU(x))^T``: [B, L, C]."""
    if not _lean(x):
        return _gelu_up(x, up)
    return _GeluUp.apply(x, up)


def _residual_out(x, shortcut, layer, res, fold):
    """``x * layer_scale + layer_bias + shortcut * res_scale + res_bias``;
    ``layer`` / ``res``: (scale, bias) pairs or None."""
    if not fold:  # the reference's order
        if layer is not None:
            x = torch.addcmul(layer[1], x, layer[0])
        if res is not None:
            shortcut = torch.addcmul(res[1], shortcut, res[0])
        return x + shortcut
    if layer is None and res is None:
        return x + shortcut
    if res is None:
        return torch.addcmul(layer[1], x, layer[0]).add_(shortcut)
    if layer is None:
        return torch.addcmul(res[1], shortcut, res[0]).add_(x)
    return torch.addcmul(layer[1] + res[1], x,
                         layer[0]).addcmul_(shortcut, res[0])


def _out_block(x, shortcut, conv_weight, conv_bias, layer, res, hw_shape,
               fold):
    if conv_weight is not None:
        x = residual_dwconv(x, conv_weight, conv_bias, hw_shape, fold)
    return _residual_out(x, shortcut, layer, res, fold)


def _pairs(ls, lb, rs, rb):
    return (None if ls is None else (ls, lb)), (None if rs is None else
                                                (rs, rb))


class _OutBlock(torch.autograd.Function):
    """dwconv2 with its residual and the output / residual scales; keeps
    neither the conv output (the layer-scale gradient is read off the conv's
    transposed gradient) nor, after :class:`_GeluUp` and with ``fold``, its
    input (recomputed from the GELU input)."""

    @staticmethod
    def forward(ctx, x, shortcut, conv_weight, conv_bias, ls, lb, rs, rb,
                hw_shape, fold):
        needs = ctx.needs_input_grad
        keep_x = needs[2] or needs[4]  # for the conv weight / layer scale
        # recomputed in float32 / float64; the float16 path keeps it (its
        # float16 matmul made the CPU backward about 25% slower)
        ctx.source = _producer(x, _GeluUp) if keep_x and fold else None
        ctx.save_for_backward(
            x if keep_x and ctx.source is None else None,
            shortcut if needs[6] else None, conv_weight, conv_bias, ls, rs)
        ctx.hw_shape, ctx.fold = hw_shape, fold
        return _out_block(x, shortcut, conv_weight, conv_bias,
                          *_pairs(ls, lb, rs, rb), hw_shape, fold)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, shortcut, conv_weight, conv_bias, ls, rs = ctx.saved_tensors
        if ctx.source is not None:
            x = _GeluUp.recompute(ctx.source)[3]
        needs = ctx.needs_input_grad
        grad_sum = grad.sum((0, 1))
        grad_w = grad_cb = grad_ls = grad_rs = None
        if conv_weight is None:
            grad_x_unit = grad  # d(out) / d(x) before the layer scale
        else:
            weight = _with_identity(conv_weight) if ctx.fold else conv_weight
            grid_grad = _grid(grad, ctx.hw_shape)
            # without a weight gradient only the input's shape is read
            grid = grid_grad if x is None else _grid(x, ctx.hw_shape)
            grad_grid, grad_w, _ = aten.convolution_backward(
                grid_grad, grid, weight, None, [1, 1],
                [1, 1], [1, 1], False, [0, 0], weight.shape[0],
                [True, needs[2], False])
            grad_x_unit = _tokens(grad_grid)
            if not ctx.fold:
                grad_x_unit = grad_x_unit + grad
            grad_cb = grad_sum
        if needs[4]:  # sum(grad * block output) = sum(x * conv^T(grad))
            grad_ls = (x * grad_x_unit).sum((0, 1))
            if conv_bias is not None:
                grad_ls = grad_ls + conv_bias * grad_sum
        if ls is not None:
            grad_x = grad_x_unit * ls
            if grad_w is not None:
                grad_w = grad_w * ls[:, None, None, None]
            if grad_cb is not None:
                grad_cb = grad_cb * ls
        else:
            grad_x = grad_x_unit
        if needs[6]:
            grad_rs = (grad * shortcut).sum((0, 1))
        grad_shortcut = grad if rs is None else grad * rs
        grad_bias = grad_sum if needs[5] or needs[7] else None
        return (grad_x, grad_shortcut, grad_w, grad_cb, grad_ls,
                grad_bias if needs[5] else None, grad_rs,
                grad_bias if needs[7] else None, None, None)


def out_block(x: torch.Tensor,
              shortcut: torch.Tensor,
              conv_weight: Optional[torch.Tensor],
              conv_bias: Optional[torch.Tensor],
              layer: Optional[Tuple[torch.Tensor, torch.Tensor]],
              res: Optional[Tuple[torch.Tensor, torch.Tensor]],
              hw_shape,
              fold: bool = True) -> torch.Tensor:
    """The adapter's output: ``y = x + dwconv2(x)`` (``y = x`` without
    ``conv_weight``), then ``y * layer_scale + layer_bias + shortcut *
    res_scale + res_bias`` (``layer`` / ``res``: (scale, bias) or None).

    Args:
        x, shortcut (Tensor): [B, L, C].

    Returns:
        Tensor: [B, L, C].
    """
    if not _lean(x):
        return _out_block(x, shortcut, conv_weight, conv_bias, layer, res,
                          hw_shape, fold)
    ls, lb = layer if layer is not None else (None, None)
    rs, rb = res if res is not None else (None, None)
    return _OutBlock.apply(x, shortcut, conv_weight, conv_bias, ls, lb, rs,
                           rb, hw_shape, fold)
