"""Evaluate a checkpoint with an mmparax (mmseg / mmdet / mmpretrain)
config: ``tools/test.py CONFIG CHECKPOINT``, or ``tools/test.py
FILE_peft.safetensors`` to rebuild the model from the config the PEFT file
records."""
import argparse
import os.path as osp
import time

import mmparax  # noqa: F401  (registers backbones, hooks, constructors)
from mmparax.apis import (
    add_run_arguments,
    build_runner,
    finish_run,
    load_config,
    parse_run_args,
    set_out,
    set_show_dir,
    setup_run,
)
from mmparax.apis.peft_checkpoint import ADAPTER_EXT, recorded_config
from mmparax.apis.upstream_warnings import silence_upstream_warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        'config',
        help='config file, or a PEFT .safetensors file alone (its recorded '
        'config is used)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
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
        'default_hooks.visualization.interval-th image, 50 by default; '
        'mmpretrain every interval-th, 5000 by default)')
    parser.add_argument(
        '--out-metrics',
        metavar='FILE',
        help='write the metrics to FILE (JSON) with their provenance: the '
        'config path and sha256 of its resolved text, the mmparax commit, '
        'package versions, seed, world size, devices, wall time and the '
        'checkpoint')
    add_run_arguments(parser)
    return parse_run_args(parser, argv)


def set_cls_show_dir(cfg, show_dir):
    """``--show-dir`` for mmpretrain configs: its ``VisualizationHook``
    paints only when enabled, into ``out_dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs a visualization hook in '
                           "default_hooks (mmpretrain's VisualizationHook)")
    hook['enable'] = True
    hook['out_dir'] = show_dir


def main(argv=None):
    silence_upstream_warnings()
    args = parse_args(argv)
    if args.checkpoint is None:
        if not args.config.endswith(ADAPTER_EXT):
            raise SystemExit(
                f'tools/test.py {args.config}: give a checkpoint after the '
                f'config, or a PEFT {ADAPTER_EXT} file alone')
        args.config, args.checkpoint = recorded_config(args.config), \
            args.config
        if args.work_dir is None:
            args.work_dir = osp.join('./work_dirs', osp.splitext(
                osp.basename(args.checkpoint))[0])
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.partial_load:
        cfg.partial_load = True
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir and cfg.get('default_scope') == 'mmpretrain':
        set_cls_show_dir(cfg, args.show_dir)
    elif args.show_dir:
        set_show_dir(cfg, args.show_dir)
    if args.out:
        set_out(cfg, args.out)
    setup_run(cfg, args.trust_checkpoint, train=False)
    start = time.time()
    runner = build_runner(cfg)
    metrics = runner.test()
    if args.out_metrics:
        from mmparax.utils.reproduce import write_metrics
        write_metrics(args.out_metrics, metrics, args.config,
                      args.cfg_options, cfg, args.checkpoint,
                      time.time() - start)
    finish_run()
    return metrics


if __name__ == '__main__':
    main()
