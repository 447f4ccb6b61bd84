"""Time one ParaX adapter (with its expert center) at Swin stage shapes.

For each stage of a Swin backbone at a given crop, builds the adapter and
center of that stage (C = embed_dims * 2^i, M = stage depth), runs
forward + backward on a [batch, (crop/2^(i+2))^2, C] input and prints one
JSON line: mean forward, backward and total seconds over ``--iters`` after
``--warmup`` iterations, the activation memory saved for backward by the
default, ``force_fp16`` and ``with_cp`` adapters and by the literal
reference (float32, and its float16 transcription), and on CUDA the
allocator's peak. A last line sums the saved memory over the stages,
weighted by their depths (one adapter per block).

Saved memory counts the distinct storages that autograd's
``saved_tensors_hooks`` see during one forward (the input and the experts
included), which does not depend on the device: the ``force_fp16`` figures
come from its float16 path, run on the CPU with
``$MMPARAX_FORCE_FP16_ON_CPU=1``.

Example::

    python tools/analysis/bench_adapter.py   # Swin-B, 512x512, batch 2
    # today's adapter against the one of a git revision, interleaved
    python tools/analysis/bench_adapter.py --baseline main --iters 10
    python tools/analysis/bench_adapter.py --device cuda --dtype float16
    python tools/analysis/bench_adapter.py --device cuda --dtype float16 \
        --force-fp16   # the ParaX recipes: float16 adapter maths

``--dtype`` is the autocast of the surrounding model; ``--force-fp16`` times
the adapter as the recipes' ``force_fp16=True`` (float16 residual maths on
CUDA whatever ``--dtype`` says; on the CPU torch's float16 kernels, whose
time says little about a GPU's).
"""
import argparse
import contextlib
import dataclasses
import json
import os
import os.path as osp
import subprocess
import time
import types
from unittest import mock

import torch

import mmparax.ops
from mmparax.peft import ParaX
from mmparax.peft.parax import FP16_ON_CPU_ENV
from mmparax.registry import PEFT_METHODS
from mmparax.testing.parax_reference import (
    reference_forward,
    reference_forward_fp16,
)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PATHS = ('default', 'force_fp16', 'with_cp')


def parse_args(argv=None):
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
        help='time ParaX force_fp16=True (float16 adapter maths, as the '
        'recipes; on the CPU with $MMPARAX_FORCE_FP16_ON_CPU=1)')
    parser.add_argument(
        '--with-cp',
        action='store_true',
        help='time ParaX with_cp=True (the adapter recomputes its '
        'activations in the backward pass)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--compare-reference',
        action='store_true',
        help='also time the literal step-by-step transcription on the same '
        'inputs (interleaved) and report ref_total_s and speedup; it '
        'does not follow --force-fp16')
    parser.add_argument(
        '--baseline',
        metavar='REV',
        help='also time the adapter of this git revision (its '
        'mmparax/peft/parax.py and mmparax/ops/depthwise_conv.py) on the '
        'same weights and inputs, interleaved step by step, and report its '
        'saved memory and base_total_s / time_ratio')
    return parser.parse_args(argv)


class SavedTensorMeter:
    """Bytes of distinct storages autograd saves for backward."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(
            self.pack, lambda t: t)

    @property
    def mb(self):
        return sum(self.storages.values()) / 2**20


def fp16_on_cpu(enabled=True):
    """``$MMPARAX_FORCE_FP16_ON_CPU=1`` while active (if ``enabled``)."""
    if not enabled:
        return contextlib.nullcontext()
    return mock.patch.dict(os.environ, {FP16_ON_CPU_ENV: '1'})


def load_revision(rev):
    """``ParaXAdapter`` and ``ExpertCenter`` of git revision ``rev``, as a
    module (its own per-sample depthwise conv; nothing registered)."""

    def source(path):
        try:
            return subprocess.run(['git', '-C', ROOT, 'show', f'{rev}:{path}'],
                                  check=True, capture_output=True,
                                  text=True).stdout
        except subprocess.CalledProcessError as e:
            raise SystemExit(f'bench_adapter: --baseline {rev}: cannot read '
                             f'{path} at that revision ({e.stderr.strip()}); '
                             'give a commit, branch or tag of this '
                             'repository') from None

    def load(name, path, package):
        module = types.ModuleType(name)
        module.__package__ = package
        exec(compile(source(path), f'{rev}:{path}', 'exec'), module.__dict__)
        return module

    ops = load('_baseline_depthwise_conv', 'mmparax/ops/depthwise_conv.py',
               'mmparax.ops')
    with mock.patch.object(mmparax.ops, 'dynamic_depthwise_conv',
                           ops.dynamic_depthwise_conv), \
            mock.patch.object(PEFT_METHODS, 'register_module',
                              lambda *a, **k: (lambda cls: cls)):
        return load('_baseline_parax', 'mmparax/peft/parax.py',
                    'mmparax.peft')


def baseline_pair(module, settings, adapter, center):
    """The revision's adapter and center, built from the same ``settings``
    (a dict of :class:`AdapterSettings`), with the weights of ours."""
    fields = {f.name for f in dataclasses.fields(module.AdapterSettings)}
    kwargs = {k: v for k, v in settings.items() if k in fields}
    width = center.down.shape[1]
    for name in ('rank', 'hidden_dim'):  # the bottleneck width
        if name in fields:
            kwargs[name] = width
    base_center = module.ExpertCenter(center.dim, width, center.num_experts,
                                      center.kernel_sizes, center.init)
    base_center.load_state_dict(center.state_dict())
    base = module.ParaXAdapter(adapter.dim, adapter.num_experts, **kwargs)
    base.load_state_dict(adapter.state_dict())
    device = center.down.device
    return base.to(device), base_center.to(device)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def build(args, stage, dim, depth, device, **flags):
    parax = ParaX(
        hidden_dim=args.hidden_dim,
        router_hidden=args.router_hidden,
        with_conv=not args.no_conv,
        **flags)
    torch.manual_seed(stage)
    center = parax.build_centers(dim, depth, stage)[0].to(device)
    adapter = parax.build_adapter(dim, center).to(device)
    return adapter, center, dataclasses.asdict(parax.settings)


def saved_mb(forward, fp16=False):
    """MB saved for backward by one forward (no backward is run)."""
    meter = SavedTensorMeter()
    with fp16_on_cpu(fp16), meter.hooks():
        forward()
    return round(meter.mb, 2)


def bench_stage(args, stage, dim, depth, grid, device, baseline=None):
    hw = (grid, grid)
    x = torch.randn(args.batch, grid * grid, dim, device=device)
    autocast = torch.autocast(
        device.type, dtype=getattr(torch, args.dtype),
        enabled=args.dtype != 'float32')

    # saved memory of every path, ours, the revision's and the reference's
    memory, pairs = {}, {}
    for path in PATHS:
        adapter, center, settings = build(
            args, stage, dim, depth, device,
            force_fp16=path == 'force_fp16', with_cp=path == 'with_cp')
        pairs[path] = [(adapter, center)]
        if baseline is not None:
            pairs[path].append(
                baseline_pair(baseline, settings, adapter, center))
        fp16 = path == 'force_fp16'
        memory[f'saved_{path}_mb'] = saved_mb(
            lambda: adapter(x, hw, center), fp16)
        if baseline is not None:
            base, base_center = pairs[path][1]
            memory[f'base_saved_{path}_mb'] = saved_mb(
                lambda: base(x, hw, base_center), fp16)
    adapter, center = pairs['default'][0]
    memory['ref_saved_mb'] = saved_mb(
        lambda: reference_forward(adapter, center, x, hw))
    memory['ref_saved_fp16_mb'] = saved_mb(
        lambda: reference_forward_fp16(adapter, center, x, hw))

    timed = 'force_fp16' if args.force_fp16 else \
        'with_cp' if args.with_cp else 'default'
    (adapter, center), *base = pairs[timed]

    def step(module, module_center, reference=False):
        sync(device)
        t0 = time.perf_counter()
        with autocast, fp16_on_cpu(timed == 'force_fp16'):
            out = reference_forward(adapter, center, x, hw) if reference \
                else module(x, hw, module_center)
        loss = out.float().square().mean()
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(args.warmup):
        step(adapter, center)
        if base:
            step(*base[0])
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    fwd = bwd = ref = base_total = 0.0
    for _ in range(args.iters):
        f, b = step(adapter, center)
        fwd, bwd = fwd + f, bwd + b
        if args.compare_reference:
            ref += sum(step(adapter, center, reference=True))
        if base:
            base_total += sum(step(*base[0]))
    result = dict(
        stage=stage,
        shape=[args.batch, grid * grid, dim],
        grid=[grid, grid],
        num_experts=depth,
        hidden_dim=args.hidden_dim,
        device=str(device),
        dtype=args.dtype,
        timed=timed,
        fwd_s=round(fwd / args.iters, 4),
        bwd_s=round(bwd / args.iters, 4),
        total_s=round((fwd + bwd) / args.iters, 4),
        **memory,
        trainable_params=sum(
            p.numel() for m in (adapter, center) for p in m.parameters()))
    if args.compare_reference:
        result['ref_total_s'] = round(ref / args.iters, 4)
        result['speedup'] = round(ref / (fwd + bwd), 2)
    if base:
        result['base_total_s'] = round(base_total / args.iters, 4)
        result['time_ratio'] = round((fwd + bwd) / base_total, 3)
    if device.type == 'cuda':
        result['peak_mem_mb'] = round(
            torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def summary(args, results):
    """Saved memory summed over the stages, weighted by their depths."""
    keys = [k for k in results[0] if 'saved' in k]
    total = {
        k: round(sum(d * r[k] for d, r in zip(args.depths, results)), 2)
        for k in keys
    }
    out = dict(summary='saved MB weighted by stage depth', **total)
    for path in PATHS:
        ref = total['ref_saved_fp16_mb' if path == 'force_fp16' else
                    'ref_saved_mb']
        out[f'{path}_over_ref'] = round(total[f'saved_{path}_mb'] / ref, 3)
    if 'time_ratio' in results[0]:  # of the depth-weighted totals
        out['time_ratio'] = round(
            sum(d * r['total_s'] for d, r in zip(args.depths, results)) /
            sum(d * r['base_total_s'] for d, r in zip(args.depths, results)),
            3)
    return out


def main(argv=None):
    """Print and return the per-stage results and the summary."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    baseline = load_revision(args.baseline) if args.baseline else None
    torch.manual_seed(0)
    results = []
    for i, depth in enumerate(args.depths):
        grid = args.crop // 2**(i + 2)
        dim = args.embed_dims * 2**i
        results.append(bench_stage(args, i, dim, depth, grid, device,
                                   baseline))
        print(json.dumps(results[-1]), flush=True)
    results.append(summary(args, results))
    print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == '__main__':
    main()
