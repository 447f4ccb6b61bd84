"""Count the trainable and total parameters of a config's model.

Builds the model on the CPU without loading any pretrained checkpoint and
reports the exact counts of the backbone (the papers' "# P") and of the whole
model, with the backbone split into its PEFT components when it has them.

Example::

    python tools/analysis/count_params.py \
        configs/parax/parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py --paper
"""
import argparse
import ast
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
        help="show the paper's # P from the metafile.yml beside the config "
        '(a config it does not list gets the counts and a note that no '
        'paper figure is recorded for it)')
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


def _base_configs(config):
    """The files named by ``_base_`` in ``config`` (a Python config)."""
    if not config.endswith('.py') or not osp.isfile(config):
        return []
    try:
        with open(config, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=config)
    except (OSError, SyntaxError, ValueError):
        return []
    bases = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets)):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            bases = [value] if isinstance(value, str) else list(value)
    folder = osp.dirname(osp.abspath(config))
    return [
        osp.normpath(osp.join(folder, base)) for base in bases
        if isinstance(base, str)
        and osp.isfile(osp.join(folder, base))
    ]


def _inherited_entry(config):
    """(base config, metafile entry) of the nearest ``_base_`` ancestor of
    ``config`` that a metafile lists, or (None, None)."""
    seen = set()
    queue = _base_configs(config)
    while queue:
        base = queue.pop(0)
        if base in seen:
            continue
        seen.add(base)
        entry = paper_entry(base)
        if entry is not None:
            return base, entry
        queue.extend(_base_configs(base))
    return None, None


def paper_figures(config):
    """(paper # P in millions, metafile model name, reason) of ``config``.

    A config that no metafile.yml beside it lists (a user's own config, or
    one that inherits a recipe and changes it) has no paper figure: the
    first two are None and ``reason`` says why.
    """
    entry = paper_entry(config)
    if entry is not None:
        millions = _parse_millions(entry['Metadata']['Trainable Parameters'])
        return millions, entry['Name'], None
    reason = (f'no paper figure is recorded for {osp.basename(config)}: '
              'no metafile.yml in its folder lists it')
    base, base_entry = _inherited_entry(config)
    if base_entry is not None:
        base_millions = _parse_millions(
            base_entry['Metadata']['Trainable Parameters'])
        reason += (f'; it inherits {osp.basename(base)}, whose paper # P '
                   f'is {base_millions}M with that recipe\'s settings')
    return None, None, reason


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
        millions, name, reason = paper_figures(args.config)
        result['paper_trainable_backbone_m'] = millions
        if millions is None:
            result['difference_m'] = None
            result['paper_reason'] = reason
        else:
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
    if args.paper and millions is None:
        print(f'paper # P:          {reason}')
    elif args.paper:
        print(f'paper # P (M):      {millions} ({name}); ours '
              f'{result["trainable_backbone"] / 1e6:.2f}, difference '
              f'{result["difference_m"]:+.3f}')
    return result


if __name__ == '__main__':
    main()
