"""Time and memory of loading a pretrained Swin checkpoint: ``.pth`` vs
``.safetensors``.

    python tools/analysis/bench_checkpoint_load.py [--arch A] [--work-dir D]

Writes a random Swin checkpoint of ``--arch`` in the official Microsoft
layout (``.pth``, read weights-only and converted on loading) and its
``.safetensors`` conversion (the host's layout, as
``tools/model_converters/to_safetensors.py`` writes it). Then, in a fresh
process per file, builds the backbone and loads the file into it as a
config's ``checkpoint_file`` is loaded (strictly). One JSON line per file:
whether it is memory-mapped; seconds to read it into a state dict and to
load it into the model (read included), each with the peak anonymous memory
it takes above the built model; and the peak RSS above the model, which also
counts the pages of a mapped file (page cache, shared and reclaimable). The
files are read from the page cache (they were just written).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import threading
import time

import torch

ARCHS = dict(
    tiny=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
    base=dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    large=dict(embed_dims=192, depths=(2, 2, 18, 2),
               num_heads=(6, 12, 24, 48)))


def backbone(arch: str):
    from mmparax.models.backbones import Swin
    from mmparax.testing import tiny_swin_kwargs
    return Swin(**tiny_swin_kwargs(window_size=12, pretrain_img_size=384,
                                   drop_path_rate=0.0, **ARCHS[arch]))


def status() -> dict:
    """VmRSS, VmHWM (peak), RssAnon and RssFile of this process, in MiB."""
    with open('/proc/self/status') as f:
        fields = dict(line.split(':', 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024
            for k in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile')}


def timed(fn, base: float):
    """``(result, seconds, peak RssAnon above base in MiB)`` of ``fn()``,
    the anonymous memory sampled every millisecond."""
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status()['RssAnon'])
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    peak[0] = max(peak[0], status()['RssAnon'])  # what the result holds
    return result, round(seconds, 2), round(peak[0] - base, 1)


def measure(arch: str, path: str) -> dict:
    """Read ``path``, then load it into a new backbone; runs in its own
    process."""
    from mmparax.utils.restricted_load import load_weights_file
    model = backbone(arch)
    base = status()
    state, read_s, read_anon = timed(lambda: load_weights_file(path),
                                     base['RssAnon'])
    with open('/proc/self/maps') as f:
        mapped = osp.realpath(path) in f.read()
    del state
    _, load_s, load_anon = timed(lambda: model.load_pretrained(path),
                                 base['RssAnon'])
    return dict(
        file=osp.basename(path), size_mib=round(osp.getsize(path) / 2**20, 1),
        memory_mapped=mapped, read_s=read_s, read_peak_anon_mib=read_anon,
        load_s=load_s, load_peak_anon_mib=load_anon,
        peak_rss_above_model_mib=round(status()['VmHWM'] - base['VmRSS'], 1))


def write_files(arch: str, folder: str):
    """The Microsoft-layout ``.pth`` and its ``.safetensors`` conversion."""
    from mmparax.testing import swin_to_microsoft, write_checkpoint
    from mmparax.utils.safetensors_file import write_safetensors
    model = backbone(arch)
    pth = write_checkpoint(osp.join(folder, f'swin_{arch}.pth'),
                           swin_to_microsoft(model.state_dict(),
                                             img_size=384))
    model.load_pretrained(pth)  # converted, checked strictly
    own = model.state_dict()
    out = osp.join(folder, f'swin_{arch}.safetensors')
    write_safetensors(out, {k: own[k] for k in model.pretrained_state_keys()})
    return pth, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', choices=sorted(ARCHS), default='large')
    parser.add_argument('--work-dir', help='folder of the two files '
                        '(default: a temporary folder, removed after)')
    parser.add_argument('--measure', help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.measure:
        print(json.dumps(measure(args.arch, args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work_dir or tmp
        os.makedirs(folder, exist_ok=True)
        for path in write_files(args.arch, folder):
            proc = subprocess.run(
                [sys.executable, __file__, '--arch', args.arch, '--measure',
                 path], capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f'measuring {path} failed:\n{proc.stderr}')
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == '__main__':
    main()
