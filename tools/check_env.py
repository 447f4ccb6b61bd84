"""Check a machine before training on it: versions, CUDA / cuDNN / NCCL,
mmcv's compiled ops, then on the GPU (on the CPU without CUDA) a float16
forward + backward of every (method, host) pair, the VMamba selective scan
against a reference, and a short AMP training run of the demo config.
Prints a table of pass / fail with times; exits 1 if a check fails."""
import argparse
import math
import os
import os.path as osp
import platform
import re
import sys
import tempfile
import time
import traceback

import torch

from mmparax.peft.parax import FP16_ON_CPU_ENV
from mmparax.testing import run_tool, short_demo_config
from mmparax.testing.peft import PAIRS, float16_forward_backward

# float16 outputs against the float32 model (relative L2)
FP16_TOLERANCE = 2e-2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        '--amp-iters',
        type=int,
        default=20,
        help='iterations of the AMP training run (default: 20)')
    parser.add_argument(
        '--cpu', action='store_true', help='check the CPU even with CUDA')
    return parser.parse_args(argv)


def environment(device: str) -> list:
    """(name, value) lines: versions and what the device offers."""
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg

    import mmparax
    cuda = torch.cuda.is_available()
    return [
        ('python', platform.python_version()),
        ('torch', torch.__version__),
        ('mmengine', mmengine.__version__),
        ('mmcv', mmcv.__version__),
        ('mmseg', mmseg.__version__),
        ('mmdet', mmdet.__version__),
        ('mmpretrain', mmpretrain.__version__),
        ('mmparax', mmparax.__version__),
        ('CUDA', f'{torch.version.cuda} ({torch.cuda.device_count()} '
         f'device(s): {torch.cuda.get_device_name(0)})' if cuda else
         f'absent (torch built for CUDA {torch.version.cuda}); the checks '
         'run on the CPU'),
        ('cuDNN', str(torch.backends.cudnn.version()) if cuda else '-'),
        ('NCCL', '.'.join(map(str, torch.cuda.nccl.version()))
         if cuda and torch.distributed.is_nccl_available() else
         'built into torch, needs CUDA' if
         torch.distributed.is_nccl_available() else 'absent'),
        ('gloo', 'available'
         if torch.distributed.is_gloo_available() else 'absent'),
        ('checks on', device),
    ]


def check_mmcv_ops(device: str) -> str:
    """mmcv's compiled ops (RoIAlign, NMS ... of the detection configs)."""
    from mmcv.utils import ext_loader
    ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
    from mmcv.ops import get_compiling_cuda_version
    built = get_compiling_cuda_version()
    if device == 'cuda':
        from mmcv.ops import nms
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]],
                             device=device)
        nms(boxes, torch.tensor([0.9, 0.8], device=device), 0.5)
        return f'compiled for CUDA {built}; nms ran on the GPU'
    return f'compiled (CUDA: {built})'


def check_pair(method: str, host: str, device: str) -> str:
    error = float16_forward_backward(method, host, device)
    if not error < FP16_TOLERANCE:
        raise AssertionError(f'float16 outputs {error:.2e} from float32 '
                             f'(tolerance {FP16_TOLERANCE})')
    return f'float16 vs float32 {error:.1e}'


def check_scan(device: str) -> str:
    """:func:`selective_scan` on ``device`` (the CUDA kernel when
    installed) against the float64 step-by-step reference on the CPU."""
    from mmparax.ops.selective_scan import (
        selective_scan,
        selective_scan_reference,
    )
    gen = torch.Generator().manual_seed(0)
    KE, G, N, L = 12, 4, 4, 64

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    args = dict(u=randn(2, KE, L), delta=randn(2, KE, L),
                A=-randn(KE, N).exp(), B=randn(2, G, N, L),
                C=randn(2, G, N, L), D=randn(KE),
                delta_bias=randn(KE) * 0.5)
    out = selective_scan(**{k: v.to(device) for k, v in args.items()})
    expected = selective_scan_reference(**args)
    error = (out.double().cpu() - expected).abs().max().item()
    if not error < 1e-3:
        raise AssertionError(f'max |error| {error:.2e} (tolerance 1e-3)')
    return f'max |error| {error:.1e}'


def check_amp_run(iters: int, device: str) -> str:
    """``tools/train.py --amp`` on the demo config (tiny ParaX Swin UperNet,
    synthetic data, random backbone) for ``iters`` iterations."""
    with tempfile.TemporaryDirectory() as tmp:
        config = short_demo_config(tmp, total=iters, interval=iters,
                                   num_train=8, num_val=2)
        env = {} if device == 'cuda' else dict(CUDA_VISIBLE_DEVICES='')
        proc = run_tool('train.py', config, '--amp', '--work-dir',
                        osp.join(tmp, 'work_dir'), cwd=tmp, env=env,
                        timeout=600)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f'exit {proc.returncode}:\n{log[-3000:]}')
    if device == 'cpu' and 'CPUAmpOptimWrapper' not in log:
        raise AssertionError('the run did not use the CPU AMP stand-in')
    losses = [float(v) for v in re.findall(r' loss: ([\d.e+-]+)', log)]
    if len(losses) < 2 or not all(map(math.isfinite, losses)):
        raise AssertionError(f'losses {losses}')
    return f'{iters} iterations, loss {losses[0]:.3f} -> {losses[-1]:.3f}'


def run_checks(checks) -> list:
    rows = []
    for name, fn in checks:
        start = time.time()
        try:
            status, detail = 'pass', fn()
        except Exception as error:  # a failing check is reported, not fatal
            status = 'FAIL'
            detail = f'{type(error).__name__}: {error}'.splitlines()[0]
            traceback.print_exc()
        rows.append((name, status, time.time() - start, detail))
        print(f'{status:4} {name} ({rows[-1][2]:.1f}s) {detail}',
              flush=True)
    return rows


def table(rows) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f'{"check":{width}}  result  time (s)  detail']
    lines += [
        f'{name:{width}}  {status:6}  {seconds:8.1f}  {detail}'
        for name, status, seconds, detail in rows
    ]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    device = 'cuda' if torch.cuda.is_available() and not args.cpu \
        else 'cpu'
    if device == 'cpu':  # ParaX's force_fp16 path, as on a GPU
        os.environ[FP16_ON_CPU_ENV] = '1'
    start = time.time()
    for name, value in environment(device):
        print(f'{name:11} {value}')
    checks = [('mmcv compiled ops', lambda: check_mmcv_ops(device))]
    checks += [(f'float16 {method} x {host}',
                lambda m=method, h=host: check_pair(m, h, device))
               for method, host in PAIRS]
    checks += [('VMamba selective scan', lambda: check_scan(device)),
               (f'AMP training ({args.amp_iters} iterations)',
                lambda: check_amp_run(args.amp_iters, device))]
    rows = run_checks(checks)
    print('\n' + table(rows))
    failed = [r[0] for r in rows if r[1] != 'pass']
    print(f'\n{len(rows) - len(failed)} / {len(rows)} checks passed in '
          f'{time.time() - start:.0f}s on {device}' +
          (': FAILED ' + ', '.join(failed) if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
