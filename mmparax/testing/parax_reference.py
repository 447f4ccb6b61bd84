"""Literal transcriptions of the ParaX adapter forward (float32 and the
reference's float16 path).

Reads the parameters of a :class:`ParaXAdapter` and its center and follows
the reference computation step by step (token layout, explicit einsums, one
conv per sample), so tests and benchmarks can hold the optimised module to
it.
"""
import torch
import torch.nn.functional as F


def reference_forward(adapter, center, x, hw_shape):
    """x: [B, L, C] -> [B, L, C]."""
    B, L, C = x.shape
    H, W = hw_shape

    def grid(t):
        return t.transpose(1, 2).reshape(B, -1, H, W)

    def tokens(t):
        return t.flatten(2).transpose(1, 2)

    s_out = x
    x = adapter.norm(x) * adapter.norm_gamma + x
    if adapter.with_conv:
        x = x + tokens(adapter.dwconv1(grid(x)))
    logits = adapter.router(x.mean(dim=1, keepdim=True))  # [B, 1, G*M]
    groups = torch.chunk(logits, adapter.num_groups, dim=-1)
    acts = []
    for g in groups:
        if adapter.top_k is not None:
            kth = g.topk(adapter.top_k, dim=-1).values[..., -1:]
            keep = g >= kth
        else:
            keep = torch.ones_like(g, dtype=torch.bool)
        if adapter.router_act == 'softmax':
            acts.append(g.masked_fill(~keep, float('-inf')).softmax(-1))
        elif adapter.router_act == 'sigmoid':
            acts.append(g.sigmoid() * keep)
        else:
            acts.append(g.relu() * keep)
    w1 = torch.einsum('blm,mrc->brc', acts[0], center.down)
    w2 = torch.einsum('blm,mcr->bcr', acts[1], center.up)
    x = torch.einsum('blc,brc->blr', x, w1)
    s_c = x
    if adapter.kernel_sizes:
        x0 = grid(x)
        ys, prev = [], None
        for i, k in enumerate(adapter.kernel_sizes):
            kern = torch.einsum('blm,mrijk->brijk', acts[2 + i],
                                center.kernels[f'{k}x{k}'])
            if i == 0 or adapter.layout == 'parallel':
                inp = x0
            elif adapter.layout == 'sequential':
                inp = prev
            else:
                a = adapter.cascade_scale
                inp = x0 * a[2 * i - 2] + prev * a[2 * i - 1]
            prev = torch.cat([
                F.conv2d(inp[b:b + 1], kern[b], padding=k // 2,
                         groups=inp.shape[1]) for b in range(B)
            ])
            ys.append(tokens(prev))
        if len(ys) == 1:
            x = ys[0]
        elif adapter.scale_attn is None:
            x = sum(ys) / len(ys)
        else:
            att = adapter.scale_attn(sum(ys)).softmax(-1)
            x = sum(y * att[..., i:i + 1] for i, y in enumerate(ys))
    x = x + s_c
    x = x + adapter.proj(x)
    x = F.gelu(x)
    x = torch.einsum('blr,bcr->blc', x, w2)
    if adapter.with_conv:
        x = x + tokens(adapter.dwconv2(grid(x)))
    if adapter.layer_scale_init is not None:
        x = adapter.layer_scale * x + adapter.layer_bias
    if adapter.res_scale_init is not None:
        s_out = adapter.res_scale * s_out + adapter.res_bias
    return x + s_out


def reference_forward_fp16(adapter, center, x, hw_shape):
    """The reference's ``force_fp16`` adapter, step by step (token layout,
    cascade layout, softmax router): x [B, L, C] -> [B, L, C] in x's dtype.

    Float16 under a float16 autocast: the input (and so the shortcut), the
    features after the first conv, the experts, the cascade scales and the
    output / residual scales and biases are cast to float16."""
    B, L, C = x.shape
    H, W = hw_shape
    dtype = x.dtype

    def half(t):
        return t.half()

    def grid(t):
        return t.transpose(1, 2).reshape(B, -1, H, W)

    def tokens(t):
        return t.flatten(2).transpose(1, 2)

    def mix(gate, bank):  # experts in float16, mixed by the gate
        return torch.einsum('bm,m...->b...', gate, half(bank).to(gate.dtype))

    with torch.autocast(x.device.type, dtype=torch.float16):
        x = half(x)
        s_out = x
        x = adapter.norm(x) * half(adapter.norm_gamma) + x
        if adapter.with_conv:
            x = x + tokens(adapter.dwconv1(grid(x)))
        x = half(x)
        logits = adapter.router(x.mean(dim=1))
        gates = [g.softmax(-1) for g in logits.chunk(adapter.num_groups, -1)]
        x = torch.einsum('blc,brc->blr', x, mix(gates[0], center.down))
        s_c = x
        if adapter.kernel_sizes:
            x0, outs, prev = grid(x), [], None
            scales = adapter.cascade_scale
            for i, k in enumerate(adapter.kernel_sizes):
                kernel = mix(gates[2 + i], center.kernels[f'{k}x{k}'])
                inp = x0 if i == 0 else \
                    x0 * half(scales)[2 * i - 2] + \
                    prev * half(scales)[2 * i - 1]
                prev = F.conv2d(
                    inp.reshape(1, -1, H, W),
                    kernel.reshape(-1, 1, k, k),
                    padding=k // 2,
                    groups=inp.shape[0] * inp.shape[1]).view(B, -1, H, W)
                outs.append(tokens(prev))
            if len(outs) == 1:
                x = outs[0]
            else:
                att = adapter.scale_attn(sum(outs)).softmax(-1)
                x = sum(o * att[..., i:i + 1] for i, o in enumerate(outs))
        x = x + s_c
        x = x + adapter.proj(x)
        x = torch.einsum('blr,bcr->blc', F.gelu(x), mix(gates[1], center.up))
        if adapter.with_conv:
            x = x + tokens(adapter.dwconv2(grid(x)))
        if adapter.layer_scale_init is not None:
            x = half(adapter.layer_scale) * x + half(adapter.layer_bias)
        if adapter.res_scale_init is not None:
            s_out = half(adapter.res_scale) * s_out + half(adapter.res_bias)
        x = x + s_out
    return x.to(dtype)
