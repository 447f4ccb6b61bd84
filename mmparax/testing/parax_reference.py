"""A literal transcription of the ParaX adapter forward.

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
