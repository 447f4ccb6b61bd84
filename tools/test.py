"""Evaluate a checkpoint with an mmparax (mmseg / mmdet) config."""
import argparse
import os

from mmengine.config import DictAction

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis import (TRUST_ENV, build_runner, finish_run, load_config,
                          set_out, set_show_dir, setup_run)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='folder of logs and the metrics json (default: '
        'work_dirs/<config name>)')
    parser.add_argument(
        '--out',
        help='save predictions: a folder of label maps for mmseg configs, '
        'a .pkl file otherwise')
    parser.add_argument(
        '--show-dir',
        help='folder to save painted predictions into (mmseg paints every '
        'default_hooks.visualization.interval-th image, 50 by default)')
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help='a checkpoint file, or a folder, whose files may be fully '
        'unpickled (torch.load(weights_only=False), which can run code: only '
        'for files you trust). Files in the work dir are trusted; other '
        'files must load with weights_only=True unless named here or in '
        f'${TRUST_ENV} (paths joined by {os.pathsep!r}). Repeatable')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, key=value (lists: key="[a,b]")')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        set_show_dir(cfg, args.show_dir)
    if args.out:
        set_out(cfg, args.out)
    setup_run(cfg, args.trust_checkpoint, train=False)
    runner = build_runner(cfg)
    metrics = runner.test()
    finish_run()
    return metrics


if __name__ == '__main__':
    main()
