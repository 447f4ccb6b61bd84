"""Training throughput and memory of config backbones (the paper's Table 15).

Builds the backbone of every config (its PEFT method attached as the config
says: full fine-tuning trains every parameter, a method its own modules;
random weights, no checkpoint loaded) and times one training step of each on
the same seeded random input of ``--batch`` images of ``--size``:

    zero the gradients, forward the backbone, loss = sum over its output
    maps of their means, backward.

The optimizer step is not part of it: like the paper, this times forward +
backward of the backbone alone. Steps run round-robin over the configs
(one step of each, ``--warmup + --iters`` times) so load from elsewhere hits
them all alike; images/s is ``--batch`` over the median seconds per step.
On a shared machine, where other processes slow some steps down many
times, the fastest step (``s_per_step_min``, ``thr_ratio_min``) is the
steadier figure.

Memory of a step:

* CUDA: the allocator's peak during the step minus what was allocated
  before it (parameters, input, nothing else: gradients are freed first),
  i.e. activations, gradients and temporaries of the step;
* CPU: the memory autograd holds, i.e. the bytes of the distinct storages
  saved for backward that the graph still holds at the end of one forward,
  plus the output maps, measured in the first untimed step. Storages of the
  backbone's parameters and buffers and of the input are not counted: they
  are resident before the step, as on CUDA. Parameter gradients
  (``grad_mb``) are reported apart.

Absolute figures depend on the device; compare the ratios to full
fine-tuning (the first config without a method, else the first config) with
the paper's. Drop path is switched off (backbone ``drop_path_rate`` and a
method's ``drop_path``) unless ``--keep-drop-path``, so that every step does
the same work; dropout stays as configured. The configs share their
pretrained weights' storage (same name and shape; nothing writes them) so
that all backbones fit in memory at once.

Examples::

    # the paper's setting (Swin-L, 1280x800, batch 4) on a GPU, with the
    # recipes' float16 mixed precision
    python tools/analysis/benchmark_train.py --device cuda --dtype float16 \\
        --out-dir work_dirs/benchmark_train
    # a small run on the CPU
    python tools/analysis/benchmark_train.py --size 256 --batch 2 \\
        --iters 5 --warmup 2 --threads 2 --out-dir work_dirs/bench_cpu
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import statistics
import sys
import time
import weakref
from collections import OrderedDict

import torch
from mmengine.config import Config

import mmparax  # noqa: F401  (registers the mmparax scope)
from mmparax.utils import build_config_model
from mmparax.utils.paper import metafile_models, metafiles, parse_millions

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FULL = 'Full-tuning'
NOCONV = 'ParaX\u2021'  # ParaX without its routed spatial experts


def _table15_models():
    """The metafile models of Table 15: the Swin-L Mask R-CNN configs, in
    the paper's order."""
    return [
        m for f in metafiles() for m in metafile_models(f)
        if m['Metadata'].get('Architecture', [])[:2] == ['Swin-L',
                                                         'Mask R-CNN']
    ]


def _paper_figures(model):
    """The ``Table 15`` metadata of a metafile model: (# P (M), throughput
    (images/s), memory (GB), box AP, mask AP), or None."""
    row = model['Metadata'].get('Table 15')
    return None if row is None else (
        parse_millions(row['Trainable Parameters']),
        row['Training Throughput (img/s)'], row['Training Memory (GB)'],
        row['box AP'], row['mask AP'])


#: the configs of Table 15 (relative to the repository), every method's
DEFAULT_CONFIGS = [m['Config'] for m in _table15_models()]
#: Table 15 (Swin-L Mask R-CNN, 1280x800, batch 4) from the metafiles:
#: real config path -> :func:`_paper_figures`
PAPER_TABLE15 = {
    osp.realpath(osp.join(ROOT, m['Config'])): _paper_figures(m)
    for m in _table15_models() if _paper_figures(m) is not None
}
PAPER_SETTING = 'Swin-L, 1280x800, batch 4, GPU'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Training throughput and memory of config backbones '
        '(forward + backward, no optimizer step)',
        epilog='Drop path (drop_path_rate of the backbone, drop_path of a '
        'method) is set to 0 unless --keep-drop-path, so every step does '
        'the same work. Memory: on CUDA the allocator peak of a step above '
        'its start; on the CPU the bytes autograd saves for backward plus '
        'the output (parameters, buffers and input excluded).')
    parser.add_argument(
        'configs',
        nargs='*',
        help='config files (default: the Swin-L Mask R-CNN configs of '
        "Table 15: full fine-tuning, every method, ParaX\u2021, ParaX)")
    parser.add_argument(
        '--size',
        type=int,
        nargs='+',
        default=[1280, 800],
        metavar='N',
        help='input width and height, as "1280x800" (default: 1280 800, an '
        'input of [B, 3, 800, 1280]); one number for a square input')
    parser.add_argument('--batch', type=int, default=4, help='default: 4')
    parser.add_argument(
        '--warmup', type=int, default=5, help='untimed steps (default: 5)')
    parser.add_argument(
        '--iters', type=int, default=20, help='timed steps (default: 20)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    parser.add_argument(
        '--dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'],
        help='autocast dtype (float32: none). The recipes train with '
        'float16 mixed precision: use float16 for the paper setting')
    parser.add_argument(
        '--amp',
        dest='dtype',
        action='store_const',
        const='float16',
        help='same as --dtype float16')
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument(
        '--keep-drop-path',
        action='store_true',
        help="keep the configs' drop path (default: switched off)")
    parser.add_argument(
        '--with-cp',
        action='store_true',
        help='also time every ParaX config with with_cp=True (its adapters '
        'recompute their activations in the backward pass), as a row '
        '"ParaX (with_cp)"')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--out-dir',
        help='write results.jsonl, table.md and throughput_memory.png here')
    parser.add_argument(
        '--json',
        action='store_true',
        help='print the JSON lines to stdout instead of the table')
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if len(args.size) == 1:
        args.size = args.size * 2
    if len(args.size) != 2 or min(args.size) <= 0:
        parser.error('--size takes a width and a height (e.g. 1280 800) or '
                     f'one positive number, got {args.size}')
    for name in ('batch', 'iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1')
    if args.warmup < 0:
        parser.error('--warmup must be 0 or more')
    return args


# -- building ---------------------------------------------------------------
def check_configs(configs):
    """Raise naming every config path that does not exist."""
    missing = [c for c in configs if not osp.isfile(c)]
    if missing:
        raise FileNotFoundError(
            f'config file(s) not found: {", ".join(missing)}. Pass paths of '
            'existing config files (relative to the current directory), '
            'e.g. configs/parax/parax_swin-l_mask-rcnn_fpn_8xb2-1x_coco.py')


def no_drop_path(backbone_cfg):
    """Switch off drop path in a backbone config (in place)."""
    backbone_cfg['drop_path_rate'] = 0.
    for key in ('peft', 'parax'):
        method = backbone_cfg.get(key)
        if isinstance(method, dict) and 'drop_path' in method:
            method['drop_path'] = 0.


def method_name(backbone):
    """The Table 15 name of a built backbone's method."""
    method = getattr(backbone, 'peft', None)
    if method is None:
        return FULL
    name = method.name
    if name == 'ParaX' and not method.kernel_sizes:
        name = NOCONV
    if getattr(getattr(method, 'settings', None), 'with_cp', False):
        name += ' (with_cp)'
    return name


def is_parax(backbone):
    method = getattr(backbone, 'peft', None)
    return method is not None and method.name == 'ParaX'


def build_backbone(config, keep_drop_path=False, seed=0, with_cp=False):
    """The backbone of ``config`` in training mode, on the CPU; ``with_cp``:
    its ParaX adapters recompute their activations in the backward pass."""
    cfg = Config.fromfile(config)
    if not keep_drop_path:
        no_drop_path(cfg.model.backbone)
    if with_cp:
        cfg.model.backbone.peft.with_cp = True
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(sys.stderr):
        backbone = build_config_model(cfg, backbone_only=True)
    backbone.train()
    if not any(p.requires_grad for p in backbone.parameters()):
        raise RuntimeError(f'{config}: the backbone has no trainable '
                           'parameter, there is no training step to time')
    return backbone


def share_weights(model, reference):
    """Point the parameters of ``model`` at those of ``reference`` with the
    same name, shape and dtype (their storage only: ``model`` keeps its own
    parameters, trainability and gradients)."""
    reference = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        ref = reference.get(name)
        if ref is not None and ref.shape == param.shape \
                and ref.dtype == param.dtype:
            param.data = ref.data


def build_backbones(configs, device, keep_drop_path=False, seed=0,
                    with_cp=False):
    """``(config, backbone)`` of each of ``configs`` on ``device`` (with
    ``with_cp``, a second one of every ParaX config right after it, its
    adapters checkpointed), sharing the storage of their common weights with
    the first one (see :func:`share_weights`)."""
    built = []
    for config in configs:
        backbone = build_backbone(config, keep_drop_path, seed)
        variants = [backbone]
        if with_cp and is_parax(backbone):
            variants.append(
                build_backbone(config, keep_drop_path, seed, with_cp=True))
        for variant in variants:
            if built:
                share_weights(variant, built[0][1])
            built.append((config, variant.to(device)))
    return built


# -- measuring --------------------------------------------------------------
def tensors(outputs):
    """The tensors of a backbone's (nested) output."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (list, tuple)):
        return [t for o in outputs for t in tensors(o)]
    if isinstance(outputs, dict):
        return [t for o in outputs.values() for t in tensors(o)]
    return []


def storage_key(t):
    return t.untyped_storage().data_ptr()


class SavedTensorMeter:
    """Bytes of the distinct storages autograd holds for backward.

    Every tensor saved while :meth:`hooks` is active is watched through a
    weak reference; :meth:`held` sums the storages of those the graph still
    holds (a branch dropped during the forward frees its own), except those
    in ``exclude`` (storage data pointers).
    """

    def __init__(self, exclude=()):
        self.exclude = set(exclude)
        self.saved = []

    def pack(self, t):
        # a detached alias: the saved output of an op must not hold the
        # op's node (a cycle that would keep a dropped branch alive)
        t = t.detach()
        self.saved.append(weakref.ref(t))
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(
            self.pack, lambda t: t)

    def held(self):
        """{storage data pointer: bytes} of the saved tensors alive now."""
        alive = (ref() for ref in self.saved)
        return {
            storage_key(t): t.untyped_storage().nbytes()
            for t in alive
            if t is not None and storage_key(t) not in self.exclude
        }


class StepRunner:
    """Training steps of a backbone on a fixed input."""

    def __init__(self, backbone, inputs, dtype):
        self.backbone, self.inputs = backbone, inputs
        self.device = inputs.device
        self.autocast_dtype = None if dtype == 'float32' \
            else getattr(torch, dtype)
        self.resident = {storage_key(inputs)} | {
            storage_key(t)
            for t in (*backbone.parameters(), *backbone.buffers())
        }
        self.times, self.peaks = [], []
        #: MB saved for backward, of the output maps and of the gradients
        self.saved_mb = self.output_mb = self.grad_mb = None

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def forward(self):
        with torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype,
                enabled=self.autocast_dtype is not None):
            return tensors(self.backbone(self.inputs))

    def step(self, record=True):
        """One timed step; ``record``: keep its time and CUDA peak."""
        self.sync()
        start = time.perf_counter()
        self.backbone.zero_grad(set_to_none=True)
        cuda = self.device.type == 'cuda'
        if cuda:
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        outputs = self.forward()
        sum(o.mean(dtype=torch.float32) for o in outputs).backward()
        self.sync()
        if record:
            self.times.append(time.perf_counter() - start)
            if cuda:
                self.peaks.append(
                    torch.cuda.max_memory_allocated(self.device) - before)

    def measured_step(self):
        """One untimed step that measures what autograd holds."""
        self.backbone.zero_grad(set_to_none=True)
        meter = SavedTensorMeter(exclude=self.resident)
        with meter.hooks():
            outputs = self.forward()
        saved = meter.held()
        output_bytes = {
            storage_key(o): o.untyped_storage().nbytes()
            for o in outputs if storage_key(o) not in saved
        }
        sum(o.mean(dtype=torch.float32) for o in outputs).backward()
        grads = sum(p.grad.numel() * p.grad.element_size()
                    for p in self.backbone.parameters()
                    if p.grad is not None)
        self.saved_mb = sum(saved.values()) / 2**20
        self.output_mb = sum(output_bytes.values()) / 2**20
        self.grad_mb = grads / 2**20


def progress_bar(total, enabled):
    if not enabled:
        return None
    from mmengine.utils import ProgressBar
    return ProgressBar(total, file=sys.stderr)


def run_round_robin(runners, warmup, iters, progress=True):
    """``warmup`` untimed then ``iters`` timed steps of every runner, one
    step of each in turn. The first untimed round measures what autograd
    holds (:meth:`StepRunner.measured_step`; an extra round if ``warmup``
    is 0)."""
    untimed = max(warmup, 1)
    bar = progress_bar((untimed + iters) * len(runners), progress)
    for it in range(untimed + iters):
        for runner in runners:
            if it == 0:
                runner.measured_step()
            else:
                runner.step(record=it >= untimed)
            if bar is not None:
                bar.update()
    if bar is not None:
        sys.stderr.write('\n')


def benchmark(args, configs):
    """One result dict per config, in the order of ``configs``."""
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda: no CUDA device is available; '
                           'use --device cpu')
    width, height = args.size
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(
        args.batch, 3, height, width, generator=generator).to(device)
    configs, backbones = zip(*build_backbones(
        configs, device, args.keep_drop_path, args.seed, args.with_cp))
    runners = [StepRunner(b, inputs, args.dtype) for b in backbones]
    run_round_robin(runners, args.warmup, args.iters, not args.no_progress)

    results = []
    for config, backbone, runner in zip(configs, backbones, runners):
        median = statistics.median(runner.times)
        params = list(backbone.parameters())
        result = OrderedDict(
            config=config,
            method=method_name(backbone),
            trainable_params=sum(p.numel() for p in params
                                 if p.requires_grad),
            total_params=sum(p.numel() for p in params),
            s_per_step_median=round(median, 5),
            s_per_step_mean=round(statistics.fmean(runner.times), 5),
            s_per_step_min=round(min(runner.times), 5),
            s_per_step=[round(t, 5) for t in runner.times],
            imgs_per_s=round(args.batch / median, 3))
        if device.type == 'cuda':
            result['mem_mb'] = round(max(runner.peaks) / 2**20, 2)
            result['mem_kind'] = 'CUDA peak above the step start'
        else:
            result['mem_mb'] = round(runner.saved_mb + runner.output_mb, 2)
            result['mem_kind'] = 'saved for backward + output'
        result.update(
            saved_mb=round(runner.saved_mb, 2),
            output_mb=round(runner.output_mb, 2),
            grad_mb=round(runner.grad_mb, 2),
            device=str(device),
            dtype=args.dtype,
            size=[width, height],
            batch=args.batch,
            warmup=args.warmup,
            iters=args.iters,
            threads=torch.get_num_threads(),
            keep_drop_path=args.keep_drop_path)
        results.append(result)
    add_ratios(results)
    return results


def paper_row(result):
    """Table 15's figures for a result, or None: a config that is not one of
    Table 15's (another backbone, a copy or a variant) gets none, whatever
    its method."""
    return PAPER_TABLE15.get(osp.realpath(result['config']))


def add_ratios(results):
    """Ratios to the full fine-tuning result (else the first), ours and the
    paper's Table 15 (for the configs of Table 15 only), in place."""
    ref = next((r for r in results if r['method'] == FULL), results[0])
    paper_ref = paper_row(ref)
    for r in results:
        r['reference'] = ref['config']
        r['thr_ratio'] = round(r['imgs_per_s'] / ref['imgs_per_s'], 3)
        r['thr_ratio_min'] = round(
            ref['s_per_step_min'] / r['s_per_step_min'], 3)
        r['mem_ratio'] = round(r['mem_mb'] / ref['mem_mb'], 3) \
            if ref['mem_mb'] else None
        paper = paper_row(r)
        r['paper'] = None if paper is None else dict(
            zip(('params_m', 'imgs_per_s', 'mem_gb', 'box_ap', 'mask_ap'),
                paper))
        r['paper_thr_ratio'] = r['paper_mem_ratio'] = None
        if paper is not None and paper_ref is not None:
            r['paper_thr_ratio'] = round(paper[1] / paper_ref[1], 3)
            r['paper_mem_ratio'] = round(paper[2] / paper_ref[2], 3)


# -- reporting --------------------------------------------------------------
def setting(results):
    r = results[0]
    width, height = r['size']
    return (f'{r["device"]}, {r["dtype"]}, {width}x{height}, batch '
            f'{r["batch"]}')


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def markdown_table(results):
    """Our figures beside the paper's Table 15, as markdown."""
    ref = results[0]['reference']
    lines = [
        f'Backbone training step (forward + backward, no optimizer step): '
        f'{setting(results)}; {results[0]["iters"]} timed steps after '
        f'{results[0]["warmup"]} warm-up, {results[0]["threads"]} '
        'threads.',
        f'Memory: {results[0]["mem_kind"]}. Ratios (x) are to '
        f'{osp.basename(ref)} (throughput: median step, or fastest step '
        f'"(min)"); paper: Table 15 ({PAPER_SETTING}), only beside its '
        'configs (the default ones).',
        '',
        '| Method | # P (M) | paper # P | s/step | min s/step | imgs/s '
        '| mem (MB) | thr x | thr x (min) | paper thr x | mem x '
        '| paper mem x | paper AP^b | paper AP^m | Config |',
        '|' + '---|' * 15,
    ]
    for r in results:
        paper = r['paper'] or {}
        lines.append('| ' + ' | '.join([
            r['method'],
            f'{r["trainable_params"] / 1e6:.2f}',
            _fmt(paper.get('params_m'), '.1f'),
            f'{r["s_per_step_median"]:.3f}',
            f'{r["s_per_step_min"]:.3f}',
            f'{r["imgs_per_s"]:.2f}',
            _fmt(r['mem_mb'], '.1f'),
            f'{r["thr_ratio"]:.2f}',
            f'{r["thr_ratio_min"]:.2f}',
            _fmt(r['paper_thr_ratio'], '.2f'),
            _fmt(r['mem_ratio'], '.2f'),
            _fmt(r['paper_mem_ratio'], '.2f'),
            _fmt(paper.get('box_ap'), '.1f'),
            _fmt(paper.get('mask_ap'), '.1f'),
            osp.basename(r['config']),
        ]) + ' |')
    return '\n'.join(lines) + '\n'


#: label offsets (points) and alignments tried in turn, nearest first
LABEL_SPOTS = [((7, 4), 'left', 'bottom'), ((7, -4), 'left', 'top'),
               ((-7, 4), 'right', 'bottom'), ((-7, -4), 'right', 'top'),
               ((0, 9), 'center', 'bottom'), ((0, -9), 'center', 'top'),
               ((7, 16), 'left', 'bottom'), ((7, -16), 'left', 'top'),
               ((-7, 16), 'right', 'bottom'), ((-7, -16), 'right', 'top'),
               ((0, 24), 'center', 'bottom'), ((0, -24), 'center', 'top')]


def _overlap(box, other):
    return (max(0, min(box.x1, other.x1) - max(box.x0, other.x0)) *
            max(0, min(box.y1, other.y1) - max(box.y0, other.y0)))


def _label(ax, points, colors):
    """Labels beside the points, each at the first of :data:`LABEL_SPOTS`
    that overlaps no label placed before it or any marker (else the one
    that overlaps least), inside the axes, tied to its point by a line of
    its colour."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 6  # half a marker, in pixels
    taken = [
        Bbox([[u - pad, v - pad], [u + pad, v + pad]])
        for u, v in (ax.transData.transform((x, y)) for _, x, y in points)
    ]
    for name, x, y in points:
        best = None
        for offset, ha, va in LABEL_SPOTS:
            text = ax.annotate(
                name, (x, y),
                xytext=offset,
                textcoords='offset points',
                ha=ha,
                va=va,
                fontsize=11,
                arrowprops=dict(
                    arrowstyle='-', color=colors[name], lw=1, shrinkA=0,
                    shrinkB=5))
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)  # no line
            cost = sum(_overlap(box, other) for other in taken) + (
                box.width * box.height - _overlap(box, frame))
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text)
            else:
                text.remove()
            if cost == 0:
                break
        taken.append(Text.get_window_extent(best[1], renderer))


def _scatter(ax, points, xlabel, ylabel, title, colors):
    for name, x, y in points:
        ax.scatter(x, y, s=90, color=colors[name], zorder=3,
                   edgecolors='black', linewidths=0.6)
    ax.set_xlabel(xlabel, fontsize=12)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.set_title(title, fontsize=13)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=11)
    ax.margins(0.18)


def plot(results, path):
    """Throughput against memory, ours and the paper's, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(OrderedDict.fromkeys(r['method'] for r in results))
    cmap = plt.get_cmap('tab10' if len(names) <= 10 else 'tab20')
    colors = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    ours = [(r['method'], r['mem_mb'], r['imgs_per_s']) for r in results]
    paper = [(r['method'], r['paper']['mem_gb'], r['paper']['imgs_per_s'])
             for r in results if r['paper'] is not None]
    fig, axes = plt.subplots(
        1, 2 if paper else 1, figsize=(14 if paper else 7.5, 6),
        squeeze=False)
    _scatter(axes[0][0], ours, f'memory (MB, {results[0]["mem_kind"]})',
             'throughput (images/s)', 'measured', colors)
    if paper:
        _scatter(axes[0][1], paper, 'memory (GB)', 'throughput (images/s)',
                 f'paper, Table 15: {PAPER_SETTING}', colors)
    fig.suptitle('Backbone training step (forward + backward): '
                 f'{setting(results)}, {results[0]["threads"]} threads',
                 fontsize=14)
    fig.tight_layout()
    # labels last: their places depend on the final axes
    _label(axes[0][0], ours, colors)
    if paper:
        _label(axes[0][1], paper, colors)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_outputs(results, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'results.jsonl'), 'w') as f:
        for r in results:
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    with open(osp.join(out_dir, 'table.md'), 'w') as f:
        f.write(markdown_table(results))
    plot(results, osp.join(out_dir, 'throughput_memory.png'))


def main(argv=None):
    args = parse_args(argv)
    configs = args.configs or [
        osp.relpath(osp.join(ROOT, c)) for c in DEFAULT_CONFIGS
    ]
    check_configs(configs)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = benchmark(args, configs)
    if args.out_dir:
        write_outputs(results, args.out_dir)
    if args.json:
        for r in results:
            print(json.dumps(r, ensure_ascii=False))
    else:
        print(markdown_table(results))
    return results


if __name__ == '__main__':
    main()
