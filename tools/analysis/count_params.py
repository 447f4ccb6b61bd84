"""Count the trainable and total parameters of a config's model.

Builds the model on the CPU without loading any pretrained checkpoint and
reports the exact counts of the backbone (the papers' "# P") and of the whole
model, with the backbone split into its PEFT components when it has them.

Example::

    python tools/analysis/count_params.py \
        configs/parax/parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py --paper
"""
import argparse
import contextlib
import json
import sys
from collections import OrderedDict

from mmengine.config import Config, DictAction

import mmparax  # noqa: F401  (registers the mmparax scope)
from mmparax.apis.upstream_warnings import silence_upstream_warnings
from mmparax.utils import (
    backbone_components,
    build_config_model,
    output_norms_note,
)
from mmparax.utils.paper import (
    paper_entry,
    paper_figures,
    paper_scope,
    scoped_count,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count trainable and total parameters of a model')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--paper',
        action='store_true',
        help="show the paper's # P from the metafile.yml beside the config "
        '(a config it does not list gets the counts and a note that no '
        'paper figure is recorded for it)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. '
        'model.backbone.peft.hidden_dim=64')
    return parser.parse_args(argv)


def _numel(params, trainable_only=False):
    return sum(p.numel() for p in params
               if p.requires_grad or not trainable_only)


def count(model):
    """Exact counts of ``model``; see the module docstring."""
    backbone = getattr(model, 'backbone', model)
    result = OrderedDict(
        trainable_backbone=_numel(backbone.parameters(), True),
        total_backbone=_numel(backbone.parameters()),
        trainable_total=_numel(model.parameters(), True),
        total=_numel(model.parameters()))
    components = backbone_components(backbone)
    if 'pretrained' in components:
        components.move_to_end('pretrained')
    result['components'] = components
    note = output_norms_note(backbone)
    if note:
        result['output_norms_trained'] = backbone.trains_output_norms
        result['output_norms'] = note
    return result


def _fmt(n):
    return f'{n:,} ({n / 1e6:.2f}M)'


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # keep stdout for the report (library logs go to stderr)
    with contextlib.redirect_stdout(sys.stderr):
        model = build_config_model(cfg)
    result = count(model)
    if args.paper:
        millions, name, reason = paper_figures(args.config)
        scope = paper_scope(paper_entry(args.config))
        ours = scoped_count(scope, model)
        result['paper_scope'] = scope
        result['paper_trainable_backbone_m'] = millions
        if millions is None:
            result['difference_m'] = None
            result['paper_reason'] = reason
        else:
            result['difference_m'] = round(ours / 1e6 - millions, 4)

    if args.json:
        print(json.dumps(result))
        return result

    backbone = getattr(model, 'backbone', model)
    print(f'config: {args.config}')
    print(f'backbone: {type(backbone).__name__}')
    for group, c in result['components'].items():
        print(f'  {group:<16}{c["total"]:>14,} params, '
              f'{c["trainable"]:>12,} trainable')
    if 'output_norms' in result:
        print(f'  {result["output_norms"]}')
    print(f'trainable backbone: {_fmt(result["trainable_backbone"])}')
    print(f'total backbone:     {_fmt(result["total_backbone"])}')
    print(f'trainable model:    {_fmt(result["trainable_total"])} '
          f'of {_fmt(result["total"])}')
    if args.paper and millions is None:
        print(f'paper # P:          {reason}')
    elif args.paper:
        what = 'whole model, heads included' if scope == 'model' \
            else scope
        print(f'paper # P (M):      {millions} ({name}; {what}); ours '
              f'{ours / 1e6:.2f}, difference {result["difference_m"]:+.3f}')
    return result


if __name__ == '__main__':
    main()
