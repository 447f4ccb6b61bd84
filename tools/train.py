"""Train a segmentor, detector or classifier from an mmparax (mmseg / mmdet /
mmpretrain) config."""
import argparse

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis import (
    add_run_arguments,
    apply_resume,
    build_runner,
    enable_amp,
    finish_run,
    load_config,
    parse_run_args,
    setup_run,
)
from mmparax.apis.upstream_warnings import silence_upstream_warnings


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
        help='fp16 mixed precision (AmpOptimWrapper; without CUDA its CPU '
        'stand-in, mmparax.CPUAmpOptimWrapper)')
    add_run_arguments(parser)
    return parse_run_args(parser, argv)


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.partial_load:
        cfg.partial_load = True
    if args.amp:
        enable_amp(cfg)
    apply_resume(cfg, args.resume)
    setup_run(cfg, args.trust_checkpoint, train=True, config_name=args.config)
    runner = build_runner(cfg)
    runner.train()
    finish_run()


if __name__ == '__main__':
    main()
