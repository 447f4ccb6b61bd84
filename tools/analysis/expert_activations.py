"""Which experts the ParaX routers of a stage pick, per image and on
average.

For every image, records the gates of the ParaX adapters of one stage at one
site (one adapter per block): ``adapter.route`` gives, per group (W1 the
down projection, W2 the up projection, then the routed kernels), a
distribution over the M experts of the stage's expert center. By default
the third stage (``--stage 2``) and the adapter after the FFN (the host's
last residual site: Swin ``post_mlp``, ConvNeXt ``post_block``), groups W1
and W2 (``--all-groups`` adds the kernel groups).

Writes to ``--out-dir``:

* ``experts_per_image.npz``: ``gates`` [N, blocks, groups, M] (NaN where a
  center has fewer experts than the largest), ``images``, ``layers``,
  ``groups``;
* ``experts_mean.json``: mean, std and top-1 share over the images, per
  block, group and expert;
* ``experts_mean.png``: the mean as one heatmap per group (rows = blocks,
  columns = experts);
* ``experts_per_image.png``: the first ``--show-images`` images with their
  gates.

Example::

    python tools/analysis/expert_activations.py CONFIG CHECKPOINT \
        --images data/ade/images/validation --max-images 200 \
        --out-dir work_dirs/experts
"""
import os
import os.path as osp

import numpy as np
import torch

from mmparax.analysis import plots
from mmparax.analysis.experts import (
    GateRecorder,
    group_names,
    resolve_stage,
    stage_adapters,
    summarise,
)
from mmparax.analysis.inputs import (
    PRETRAINED,
    Normalizer,
    add_image_arguments,
    build_model,
    default_device,
    default_size,
    get_backbone,
    image_paths,
    iter_images,
    load_config,
    thumbnail,
    to_size,
    tool_parser,
    write_json,
)
from mmparax.apis.upstream_warnings import silence_upstream_warnings


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument('config', help='config file of a ParaX model')
    parser.add_argument(
        'checkpoint',
        help=f'checkpoint file (full or PEFT), or {PRETRAINED!r}: the '
        "config's pretrained backbone with the adapters switched off "
        '(their routers still route)')
    add_image_arguments(parser)
    parser.add_argument(
        '--stage', type=int, default=2,
        help='stage index (negative: from the end). Default: 2, the third')
    parser.add_argument(
        '--site', default=None,
        help="block site of the adapters (e.g. 'post_attn'); default: the "
        "host's last residual site ('post_mlp' for Swin)")
    parser.add_argument(
        '--all-groups', action='store_true',
        help='include the routed kernel groups, not only W1 and W2')
    parser.add_argument(
        '--show-images', type=int, default=4,
        help='images in experts_per_image.png. Default: 4')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    paths = image_paths(cfg, args.images, args.split, args.max_images)
    size = to_size(args.size) if args.size else default_size(cfg)
    device = default_device(args.device)
    model = build_model(cfg, args.checkpoint, device=device,
                        trusted=args.trust_checkpoint, seed=args.seed)
    backbone = get_backbone(model)
    adapters = stage_adapters(backbone, args.stage, args.site)
    stage = resolve_stage(backbone, args.stage)
    site = adapters[0][0].split('.', 1)[1]
    layers = [label.split('.', 1)[0] for label, _ in adapters]
    groups = group_names(adapters[0][1])
    keep = len(groups) if args.all_groups else 2
    groups = groups[:keep]

    print(f'{len(paths)} images at {size[0]}x{size[1]}; stage {stage}, '
          f'site {site}: {len(adapters)} adapters, groups {groups}')
    gates, thumbs = [], []
    with torch.no_grad(), GateRecorder([a for _, a in adapters]) as rec:
        for x, rgb in iter_images(paths, size, Normalizer(cfg), device):
            backbone(x)
            gates.append(rec.pop()[:, :, :keep])
            if len(thumbs) < args.show_images:
                thumbs.append(thumbnail(rgb))
    gates = torch.cat(gates).numpy()  # [N, blocks, groups, M]

    os.makedirs(args.out_dir, exist_ok=True)
    np.savez_compressed(
        osp.join(args.out_dir, 'experts_per_image.npz'),
        gates=gates,
        images=np.array(paths),
        layers=np.array(layers),
        groups=np.array(groups))
    stats = summarise(gates)
    write_json(
        osp.join(args.out_dir, 'experts_mean.json'),
        dict(config=args.config, checkpoint=args.checkpoint, stage=stage,
             site=site, layers=layers, groups=groups,
             num_experts=gates.shape[-1], num_images=len(paths),
             size=list(size), **stats))
    title = (f'{osp.splitext(osp.basename(args.config))[0]}: stage '
             f'{stage}, {site}, mean over {len(paths)} images')
    plots.gate_heatmaps(stats['mean'], layers, groups,
                        osp.join(args.out_dir, 'experts_mean.png'), title)
    if thumbs:
        n = len(thumbs)
        plots.gate_grid(gates[:n], thumbs, layers, groups,
                        osp.join(args.out_dir, 'experts_per_image.png'),
                        [osp.basename(p) for p in paths[:n]])
    np.set_printoptions(precision=3, suppress=True)
    for g, name in enumerate(groups):
        print(f'mean gates {name} (blocks x experts):\n'
              f'{stats["mean"][:, g]}')
    print(f'written to {args.out_dir}')
    return stats


if __name__ == '__main__':
    main()
