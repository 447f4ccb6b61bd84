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
import os.path as osp
import sys
from collections import OrderedDict

import yaml
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

import mmparax  # noqa: F401  (registers the mmparax scope)
from mmparax.utils import backbone_components


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count trainable and total parameters of a model')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--json', action='store_true', help='print one JSON object')
    parser.add_argument(
        '--paper',
        action='store_true',
        help="show the paper's # P from the metafile.yml beside the config")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. '
        'model.backbone.parax.rank=64')
    return parser.parse_args(argv)


def _strip_pretrained(cfg):
    """Drop every pretrained-weight reference from a model config."""
    if isinstance(cfg, dict):
        if 'pretrained' in cfg:
            cfg['pretrained'] = None
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            _strip_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _strip_pretrained(value)


def build_model(cfg):
    """Build ``cfg.model`` on the CPU; weights stay as constructed."""
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model.copy()
    _strip_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    return model.cpu()


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
    return result


def _parse_millions(value):
    """'5.2M' or 5.2 (millions) -> 5.2."""
    if isinstance(value, str):
        value = value.strip().rstrip('Mm')
    return float(value)


def paper_entry(config):
    """The metafile.yml entry of ``config`` in its folder, or None."""
    metafile = osp.join(osp.dirname(osp.abspath(config)), 'metafile.yml')
    if not osp.isfile(metafile):
        return None
    with open(metafile) as f:
        meta = yaml.safe_load(f)
    for model in meta.get('Models', []):
        if osp.basename(model.get('Config', '')) == osp.basename(config):
            return model
    return None


def paper_figures(config):
    """(paper # P in millions, metafile model name) of ``config``."""
    entry = paper_entry(config)
    if entry is None:
        raise SystemExit(f'no entry for {osp.basename(config)} in the '
                         'metafile.yml of its folder')
    millions = _parse_millions(entry['Metadata']['Trainable Parameters'])
    return millions, entry['Name']


def _fmt(n):
    return f'{n:,} ({n / 1e6:.2f}M)'


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # keep stdout for the report (library logs go to stderr)
    with contextlib.redirect_stdout(sys.stderr):
        model = build_model(cfg)
    result = count(model)
    if args.paper:
        millions, name = paper_figures(args.config)
        result['paper_trainable_backbone_m'] = millions
        result['difference_m'] = round(
            result['trainable_backbone'] / 1e6 - millions, 4)

    if args.json:
        print(json.dumps(result))
        return result

    backbone = getattr(model, 'backbone', model)
    print(f'config: {args.config}')
    print(f'backbone: {type(backbone).__name__}')
    for group, c in result['components'].items():
        print(f'  {group:<16}{c["total"]:>14,} params, '
              f'{c["trainable"]:>12,} trainable')
    print(f'trainable backbone: {_fmt(result["trainable_backbone"])}')
    print(f'total backbone:     {_fmt(result["total_backbone"])}')
    print(f'trainable model:    {_fmt(result["trainable_total"])} '
          f'of {_fmt(result["total"])}')
    if args.paper:
        print(f'paper # P (M):      {millions} ({name}); ours '
              f'{result["trainable_backbone"] / 1e6:.2f}, difference '
              f'{result["difference_m"]:+.3f}')
    return result


if __name__ == '__main__':
    main()
