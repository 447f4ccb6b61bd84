"""Train a segmentor or detector from an mmparax (mmseg / mmdet) config."""
import argparse
import os

from mmengine.config import DictAction

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis import (TRUST_ENV, apply_resume, build_runner,
                          enable_amp, finish_run, load_config, setup_run)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--work-dir',
        help='folder of logs and checkpoints (default: '
        'work_dirs/<config name>)')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        metavar='CKPT',
        help='resume from CKPT, or without CKPT from the latest checkpoint '
        'of the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='fp16 mixed precision (AmpOptimWrapper; needs CUDA)')
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
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.amp:
        enable_amp(cfg)
    apply_resume(cfg, args.resume)
    setup_run(cfg, args.trust_checkpoint, train=True, config_name=args.config)
    runner = build_runner(cfg)
    runner.train()
    finish_run()


if __name__ == '__main__':
    main()
