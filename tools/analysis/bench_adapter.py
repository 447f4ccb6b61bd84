"""Time one ParaX adapter (with its expert center) at Swin stage shapes.

For each stage of a Swin backbone at a given crop, builds the adapter and
center of that stage (C = embed_dims * 2^i, M = stage depth), runs
forward + backward on a [batch, (crop/2^(i+2))^2, C] input and prints one
JSON line: mean forward, backward and total seconds over ``--iters`` after
``--warmup`` iterations, the activation memory saved for backward, and on
CUDA the allocator's peak.

Example::

    python tools/analysis/bench_adapter.py   # Swin-B, 512x512, batch 2
    python tools/analysis/bench_adapter.py --device cuda --dtype float16
    python tools/analysis/bench_adapter.py --device cuda --dtype float16 \
        --force-fp16   # the ParaX recipes: float16 adapter maths

``--dtype`` is the autocast of the surrounding model; ``--force-fp16`` runs
the adapter as the recipes' ``force_fp16=True`` (float16 residual maths on
CUDA whatever ``--dtype`` says; on the CPU it changes nothing).
"""
import argparse
import json
import sys
import time

import torch

from mmparax.peft import ParaX
from mmparax.testing.parax_reference import reference_forward


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--embed-dims', type=int, default=128)
    parser.add_argument(
        '--depths', type=int, nargs='+', default=[2, 2, 18, 2])
    parser.add_argument('--crop', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--hidden-dim', type=int, default=128)
    parser.add_argument('--router-hidden', type=int, default=16)
    parser.add_argument(
        '--no-conv', action='store_true', help='conv branch off (ParaX‡)')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'],
        help='autocast dtype (float32: no autocast)')
    parser.add_argument(
        '--force-fp16',
        action='store_true',
        help='ParaX force_fp16=True (float16 adapter maths on CUDA, as the '
        'recipes; a no-op on other devices)')
    parser.add_argument(
        '--with-cp',
        action='store_true',
        help='ParaX with_cp=True (the adapter recomputes its activations in '
        'the backward pass)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--compare-reference',
        action='store_true',
        help='also time the literal step-by-step transcription on the same '
        'inputs (interleaved) and report ref_total_s and speedup; it '
        'does not follow --force-fp16')
    return parser.parse_args()


class SavedTensorMeter:
    """Bytes of distinct storages autograd saves for backward."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def mb(self):
        return sum(self.storages.values()) / 2**20


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def bench_stage(args, stage, dim, depth, grid, device):
    parax = ParaX(
        hidden_dim=args.hidden_dim,
        router_hidden=args.router_hidden,
        with_conv=not args.no_conv,
        force_fp16=args.force_fp16,
        with_cp=args.with_cp)
    center = parax.build_centers(dim, depth, stage)[0].to(device)
    adapter = parax.build_adapter(dim, center).to(device)
    x = torch.randn(args.batch, grid * grid, dim, device=device)
    autocast = torch.autocast(
        device.type, dtype=getattr(torch, args.dtype),
        enabled=args.dtype != 'float32')

    def ours():
        return adapter(x, (grid, grid), center)

    def reference():
        return reference_forward(adapter, center, x, (grid, grid))

    def step(meter=None, forward=ours):
        sync(device)
        t0 = time.perf_counter()
        if meter is None:
            with autocast:
                out = forward()
        else:
            with autocast, torch.autograd.graph.saved_tensors_hooks(
                    meter.pack, lambda t: t):
                out = forward()
        loss = out.float().square().mean()
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(args.warmup):
        step()
    meter = SavedTensorMeter()
    step(meter)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    fwd = bwd = ref = 0.0
    for _ in range(args.iters):
        f, b = step()
        fwd, bwd = fwd + f, bwd + b
        if args.compare_reference:
            ref += sum(step(forward=reference))
    result = dict(
        stage=stage,
        shape=[args.batch, grid * grid, dim],
        grid=[grid, grid],
        num_experts=depth,
        hidden_dim=args.hidden_dim,
        device=str(device),
        dtype=args.dtype,
        force_fp16=args.force_fp16 and device.type == 'cuda',
        with_cp=args.with_cp,
        fwd_s=round(fwd / args.iters, 4),
        bwd_s=round(bwd / args.iters, 4),
        total_s=round((fwd + bwd) / args.iters, 4),
        saved_activations_mb=round(meter.mb, 1),
        trainable_params=sum(
            p.numel() for m in (adapter, center) for p in m.parameters()))
    if args.compare_reference:
        result['ref_total_s'] = round(ref / args.iters, 4)
        result['speedup'] = round(ref / (fwd + bwd), 2)
    if device.type == 'cuda':
        result['peak_mem_mb'] = round(
            torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.force_fp16 and device.type != 'cuda':
        print(f'bench_adapter: --force-fp16 has no effect on {device.type} '
              '(float16 adapter maths runs only on CUDA)', file=sys.stderr)
    torch.manual_seed(0)
    for i, depth in enumerate(args.depths):
        grid = args.crop // 2**(i + 2)
        dim = args.embed_dims * 2**i
        print(json.dumps(bench_stage(args, i, dim, depth, grid, device)),
              flush=True)


if __name__ == '__main__':
    main()
