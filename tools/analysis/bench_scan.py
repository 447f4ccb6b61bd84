"""Time the selective scan against the step-by-step reference.

Forward + backward at the four stage shapes of VMamba-B on a 512x512 crop
(L = 128^2, 64^2, 32^2, 16^2; inner width E = 256, 512, 1024, 2048; K = 4
directions; N = 1). Prints one JSON line per stage:

- ``ours_s``: :func:`mmparax.ops.selective_scan` at the full length;
- ``naive_s``: :func:`mmparax.ops.selective_scan_reference` (fp32, one time
  step indexed per iteration under autograd, backward quadratic in L) at
  ``naive_len`` steps, the full length unless ``--max-naive-len`` truncates
  it (``naive_truncated``);
- ``ours_s_at_naive_len`` and ``ratio`` = naive_s / ours_s_at_naive_len, the
  like-for-like speed-up;
- ``max_abs_err`` (``max_rel_err``): largest difference between the two over
  the output and the gradients w.r.t. u, delta, A, B, C, D and the delta bias
  (relative: divided by the largest magnitude of each tensor).

Example::

    python tools/analysis/bench_scan.py --stages 2 3 --max-naive-len 512
"""
import argparse
import json
import math
import time

import torch

from mmparax.ops import selective_scan, selective_scan_reference

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--stages', type=int, nargs='+', default=[0, 1, 2, 3],
        help='VMamba-B stages to time (0-3)')
    parser.add_argument('--crop', type=int, default=512, help='input size')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--max-naive-len', type=int, default=1024,
        help='truncate the sequence of the naive reference to this length '
        '(its backward is quadratic in L); 0 = never')
    parser.add_argument(
        '--repeat', type=int, default=3,
        help='timed runs of our scan (the fastest counts); the naive one '
        'runs once')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def stage_shape(stage, crop, dim=128, ssm_ratio=2):
    """(L, E) of a VMamba-B stage for a square crop."""
    side = crop // 4 // 2**stage
    return side * side, ssm_ratio * dim * 2**stage


def make_inputs(batch, length, width, groups=4, states=1, seed=0):
    """Scan inputs with VMamba's initial magnitudes (A = -1, D = 1, step
    sizes in [1e-3, 0.1] after softplus)."""
    g = torch.Generator().manual_seed(seed)
    KE = groups * width
    dt = torch.empty(KE).uniform_(
        math.log(1e-3), math.log(0.1), generator=g).exp()
    return dict(
        u=torch.randn(batch, KE, length, generator=g),
        delta=torch.randn(batch, KE, length, generator=g) * 0.5,
        A=-torch.ones(KE, states),
        B=torch.randn(batch, groups, states, length, generator=g),
        C=torch.randn(batch, groups, states, length, generator=g),
        D=torch.ones(KE),
        delta_bias=dt + torch.log(-torch.expm1(-dt)))


def forward_backward(fn, inputs, grad_out):
    """Seconds of one forward + backward, the output and the gradients."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    start = time.perf_counter()
    y = fn(**leaves)
    y.backward(grad_out)
    seconds = time.perf_counter() - start
    grads = {k: v.grad for k, v in leaves.items()}
    return seconds, y.detach(), grads


def compare(y, grads, y_ref, grads_ref):
    pairs = [('y', y, y_ref)] + [(k, grads[k], grads_ref[k]) for k in NAMES]
    abs_err = {k: (a - b).abs().max().item() for k, a, b in pairs}
    rel_err = {
        k: abs_err[k] / max(b.abs().max().item(), 1e-30)
        for k, _, b in pairs
    }
    return abs_err, rel_err


def bench_stage(stage, args):
    L, E = stage_shape(stage, args.crop)
    inputs = make_inputs(args.batch, L, E, seed=args.seed + stage)
    grad_out = torch.randn(args.batch, 4 * E, L)

    def best_of(inputs, grad_out):
        runs = [
            forward_backward(selective_scan, inputs, grad_out)
            for _ in range(max(1, args.repeat))
        ]
        return min(r[0] for r in runs), runs[-1][1], runs[-1][2]

    ours, y, grads = best_of(inputs, grad_out)
    n = L if args.max_naive_len <= 0 else min(L, args.max_naive_len)
    short = {
        k: v[..., :n].contiguous() if k in ('u', 'delta', 'B', 'C') else v
        for k, v in inputs.items()
    }
    short_grad = grad_out[..., :n].contiguous()
    ours_short = ours
    if n < L:
        ours_short, y, grads = best_of(short, short_grad)
    naive, y_ref, grads_ref = forward_backward(
        lambda **kw: selective_scan_reference(dtype=torch.float32, **kw),
        short, short_grad)
    abs_err, rel_err = compare(y, grads, y_ref, grads_ref)
    return dict(
        stage=stage,
        batch=args.batch,
        L=L,
        E=E,
        K=4,
        N=1,
        ours_s=round(ours, 4),
        naive_s=round(naive, 4),
        naive_len=n,
        naive_truncated=n < L,
        ours_s_at_naive_len=round(ours_short, 4),
        ratio=round(naive / ours_short, 1),
        max_abs_err=max(abs_err.values()),
        max_abs_err_y=abs_err['y'],
        max_rel_err=max(rel_err.values()),
        threads=torch.get_num_threads())


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for stage in args.stages:
        if not 0 <= stage <= 3:
            raise SystemExit(f'stage {stage} is not one of 0, 1, 2, 3')
        print(json.dumps(bench_stage(stage, args)), flush=True)


if __name__ == '__main__':
    main()
