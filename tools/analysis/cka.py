"""Linear CKA between the layers of a stage, for one or more models.

The layers are the ParaX adapters of the stage (every site, in block order)
or, with ``--blocks`` or for a model without ParaX adapters, the blocks of
the stage (their outputs); ``--all-stages`` takes those of every stage.
Each layer's output for each image is average-pooled over space, to [C]
(``--pool 1``, the default) or to an S x S grid flattened to [C * S * S]
(``--pool S``); linear CKA (Kornblith et al., 2019) of the centred
[N images, features] representations of every pair of layers gives a
layer x layer matrix per model.

Models are ``CONFIG [CHECKPOINT]`` pairs; CHECKPOINT is a file (full or
PEFT), or ``pretrained`` for the config's pretrained backbone with every
method module switched off (the adapters then pass the stream through).

Writes ``cka.png`` (one heatmap per model), ``cka.json`` (matrices, layer
names and summaries) and ``cka.npz`` (``cka_<i>`` [L, L] per model) to
``--out-dir``.

Example::

    python tools/analysis/cka.py CONFIG pretrained CONFIG CHECKPOINT \
        --labels Swin-B ParaX --stage 2 --images data/ade/images/validation \
        --max-images 500 --out-dir work_dirs/cka
"""
import gc
import os
import os.path as osp

import numpy as np

from mmparax.analysis import plots
from mmparax.analysis.cka import (
    cka_matrix,
    collect_features,
    stage_layers,
    summarise,
)
from mmparax.analysis.experts import resolve_stage
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
        '--stage', type=int, default=2,
        help='stage index (negative: from the end). Default: 2')
    parser.add_argument(
        '--all-stages', action='store_true',
        help='compare the layers of every stage (ignores --stage)')
    parser.add_argument(
        '--blocks', action='store_true',
        help='compare the outputs of the blocks, not of the adapters')
    parser.add_argument(
        '--pool', type=int, default=1,
        help='average-pool each output to a POOL x POOL grid. Default: 1')
    parser.add_argument(
        '--vmin', type=float, default=0.0,
        help='CKA at the bottom of the colour scale (the top is 1). '
        'Default: 0')
    return parser.parse_args(argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    specs, cfgs, paths, size, device = resolve_inputs(args)
    if len(paths) < 2:
        raise ValueError(f'CKA compares representations across images: '
                         f'give at least 2 images, got {len(paths)}')
    print(f'{len(specs)} models, {len(paths)} images at {size[0]}x{size[1]}')

    matrices, results = [], []
    for spec, cfg in zip(specs, cfgs):
        model = build_model(cfg, spec.checkpoint, args.random_weights,
                            device, args.trust_checkpoint, args.seed)
        backbone = get_backbone(model, host=True)
        stage = None if args.all_stages else resolve_stage(
            backbone, args.stage)
        kind, layers = stage_layers(backbone, stage, args.blocks)
        names = [label for label, _ in layers]
        where = 'every stage' if stage is None else f'stage {stage}'
        print(f'{spec.label!r}: {where}, {len(layers)} {kind}')
        feats = collect_features(
            backbone, kind, layers,
            (x for x, _ in iter_images(paths, size, Normalizer(cfg),
                                       device)), args.pool)
        matrix = cka_matrix(feats)
        matrices.append(matrix)
        results.append(dict(
            label=spec.label, config=spec.config,
            checkpoint=spec.checkpoint, stage=stage, layers_kind=kind,
            layers=names, features=[int(f.shape[1]) for f in feats],
            cka=matrix, summary=summarise(matrix)))
        del model, backbone, feats
        gc.collect()

    os.makedirs(args.out_dir, exist_ok=True)
    np.savez_compressed(
        osp.join(args.out_dir, 'cka.npz'),
        labels=np.array([s.label for s in specs]), images=np.array(paths),
        **{f'cka_{i}': m for i, m in enumerate(matrices)},
        **{f'layers_{i}': np.array(r['layers'])
           for i, r in enumerate(results)})
    write_json(
        osp.join(args.out_dir, 'cka.json'),
        dict(size=list(size), num_images=len(paths), pool=args.pool,
             models=results))
    plots.cka_panels(matrices, [s.label for s in specs],
                     [r['layers'] for r in results],
                     osp.join(args.out_dir, 'cka.png'),
                     f'linear CKA, {len(paths)} images', args.vmin)
    for r in results:
        s = r['summary']
        print(f'{r["label"]!r}: mean off-diagonal '
              f'{s["mean_off_diagonal"]}, consecutive layers '
              f'{s["mean_consecutive"]}, first-last {s["first_last"]}')
    print(f'written to {args.out_dir}')
    return results


if __name__ == '__main__':
    main()
