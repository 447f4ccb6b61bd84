"""Effective receptive fields of one or more models, side by side.

For every image (resized to ``--size``), the gradient of the summed
channels (after a ReLU, as RepLKNet's ERF code) of the centre pixel of one
backbone output (``--stage``: an index into the backbone's outputs, -1 the
last) with respect to the input; its absolute value summed over the input
channels, averaged over the images (Luo et al., 2016).

The figure shows, per model, ``log10(1 + ERF)`` divided by its maximum
(the RepLKNet convention) or, with ``--log-decades D``, ``log10(ERF /
max)`` over D decades, which does not depend on the scale of the
gradients. The high-contribution area ratio is, for each share t, the area
(fraction of the image) of the smallest square around the centre holding t
of the total contribution: of the mean map itself (``raw``) and of the
displayed map (``display``; RepLKNet's measure without ``--log-decades``).

Models are ``CONFIG [CHECKPOINT]`` pairs; CHECKPOINT is a file (full or
PEFT), or ``pretrained`` for the config's pretrained backbone with every
method module switched off; a config without a checkpoint needs
``--random-weights``.

Writes ``erf.png``, ``erf.json`` (ratios per model) and ``erf.npz`` (the
mean maps ``erf`` [models, H, W] and the displayed ``erf_display``) to
``--out-dir``.

Example::

    python tools/analysis/erf.py \
        CONFIG pretrained  CONFIG work_dirs/parax/iter_160000.pth \
        --labels Swin-B ParaX --images data/ade/images/validation \
        --max-images 50 --out-dir work_dirs/erf
"""
import gc
import os
import os.path as osp

import numpy as np

from mmparax.analysis import plots
from mmparax.analysis.erf import (
    THRESHOLDS,
    backbone_output,
    high_contribution_ratio,
    mean_erf,
    normalise,
)
from mmparax.analysis.inputs import (
    Normalizer,
    add_image_arguments,
    add_model_arguments,
    build_model,
    get_backbone,
    iter_images,
    resolve_inputs,
    tool_parser,
    write_json,
)
from mmparax.apis.upstream_warnings import silence_upstream_warnings


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    add_model_arguments(parser)
    add_image_arguments(parser)
    parser.add_argument(
        '--stage', type=int, default=-1,
        help="index into the backbone's outputs (its out_indices). "
        'Default: -1, the last')
    parser.add_argument(
        '--thresholds', type=float, nargs='+', default=list(THRESHOLDS),
        help='shares of the total contribution for the area ratios')
    parser.add_argument(
        '--log-decades', type=float, default=None,
        help='display log10(ERF / max) over this many decades instead of '
        'log10(1 + ERF) / max (which is nearly linear when the gradients '
        'are much smaller than 1)')
    return parser.parse_args(argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    specs, cfgs, paths, size, device = resolve_inputs(args)
    print(f'{len(specs)} models, {len(paths)} images at {size[0]}x{size[1]}, '
          f'output {args.stage}')

    maps, results = [], []
    for spec, cfg in zip(specs, cfgs):
        model = build_model(cfg, spec.checkpoint, args.random_weights,
                            device, args.trust_checkpoint, args.seed)
        forward = backbone_output(get_backbone(model), args.stage)
        print(f'{spec.label!r}:')
        erf = mean_erf(forward, (x for x, _ in iter_images(
            paths, size, Normalizer(cfg), device)))
        maps.append(erf)
        results.append(dict(
            label=spec.label, config=spec.config,
            checkpoint=spec.checkpoint,
            raw=high_contribution_ratio(erf, args.thresholds),
            display=high_contribution_ratio(
                normalise(erf, args.log_decades), args.thresholds)))
        del model, forward
        gc.collect()

    os.makedirs(args.out_dir, exist_ok=True)
    maps = np.stack(maps)
    scale = 'log10(1 + ERF) / max' if args.log_decades is None else \
        f'clip(log10(ERF / max), -{args.log_decades:g}, 0) / ' \
        f'{args.log_decades:g} + 1'
    shown = np.stack([normalise(m, args.log_decades) for m in maps])
    np.savez_compressed(
        osp.join(args.out_dir, 'erf.npz'), erf=maps, erf_display=shown,
        labels=np.array([s.label for s in specs]), images=np.array(paths))
    write_json(
        osp.join(args.out_dir, 'erf.json'),
        dict(stage=args.stage, size=list(size), num_images=len(paths),
             thresholds=args.thresholds,
             normalisation=scale, log_decades=args.log_decades,
             models=results))
    ts = '/'.join(f'{t:g}' for t in args.thresholds)
    notes = ['area ratio t=' + ts + ': ' + '/'.join(
        f'{100 * v["area_ratio"]:.1f}' for v in r['raw'].values()) + '%'
        for r in results]
    plots.erf_panels(shown, [s.label for s in specs],
                     osp.join(args.out_dir, 'erf.png'), notes, scale,
                     f'ERF of backbone output {args.stage}, '
                     f'{len(paths)} images, {size[0]}x{size[1]}')
    for r in results:
        ratios = ', '.join(f't={k}: {v["area_ratio"]:.3f}'
                           for k, v in r['raw'].items())
        print(f'{r["label"]!r} high-contribution area ratio {ratios}')
    print(f'written to {args.out_dir}')
    return results


if __name__ == '__main__':
    main()
