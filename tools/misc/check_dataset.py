"""Check every file of a config's data split and list the bad ones.

    python tools/misc/check_dataset.py CONFIG [--split train|val|test]
        [--cfg-options data_root=PATH]

Each sample's image and annotations are read as the config's pipeline reads
them (up to its last ``Load*`` transform), and every label map must hold
only classes and the ignore index. Prints one line per bad file, then a
summary; exits with 1 if any file is bad (or the split is empty), else 0.
The data set must be one of mmparax's (``mmparax.ADE20KDataset``, ...; the
dataset base configs use them).
"""
import argparse
import sys

from mmengine.config import DictAction
from mmengine.registry import DATASETS, init_default_scope
from mmengine.utils import ProgressBar

import mmparax  # noqa: F401  (registers the data sets)
from mmparax.apis.runtime import load_config
from mmparax.apis.upstream_warnings import silence_upstream_warnings
from mmparax.datasets import CheckedDataMixin, DataError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--split',
        choices=['train', 'val', 'test'],
        default='train',
        help='the data set of <split>_dataloader (default: train)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, key=value (data_root=PATH moves '
        'every split)')
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    silence_upstream_warnings()
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset_cfg = cfg[f'{args.split}_dataloader'].dataset
    try:
        dataset = DATASETS.build(dataset_cfg)
    except DataError as error:
        print(f'{args.split}: {error}')
        return 1
    if not isinstance(dataset, CheckedDataMixin):
        raise SystemExit(
            f'{args.config}: the {args.split} data set is a '
            f'{type(dataset).__name__}; this check needs one of mmparax\'s '
            f"(type='mmparax.{type(dataset).__name__}')")
    bar = None if args.no_progress else ProgressBar(
        len(dataset), file=sys.stderr)
    problems = []
    for idx in range(len(dataset)):
        problem = dataset.check_sample(idx)
        if problem is not None:
            problems.append(problem)
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stderr.write('\n')
    for problem in problems:
        print(problem)
    print(f'{args.split}: {len(problems)} of {len(dataset)} samples have '
          f'problems' if problems else
          f'{args.split}: all {len(dataset)} samples read, labels in range')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
