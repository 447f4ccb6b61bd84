"""Reproduce a table of the paper: plan, train, evaluate, gather.

The runs come from the metafiles (``model-index.yml``): a paper table, or
methods / backbones / tasks / config globs. Each run trains through the
repository's launchers, resumes where it stopped, is evaluated, and leaves
``metrics.json`` (metrics and provenance) in its work dir; ``gather`` prints
the table with the paper's figures beside ours.

Examples::

    python tools/reproduce.py --table 1 --dry-run        # the plan
    python tools/reproduce.py --table 1                  # run it here
    python tools/reproduce.py --table 10 --launcher slurm --partition gpu \\
        --max-jobs 4
    python tools/reproduce.py --method ParaX --backbone 'Swin-*' --seeds 0 1 2
    python tools/reproduce.py gather --table 1 --out-dir work_dirs/table1
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmparax.utils import reproduce  # noqa: E402


def add_selection(parser):
    group = parser.add_argument_group(
        'selection (each option takes several values or globs, '
        'case-insensitive)')
    group.add_argument('--table', nargs='+', default=[],
                       help="the paper's tables: 1, 2, 10, 14a, ...")
    group.add_argument('--method', nargs='+', default=[],
                       help="methods (a metafile's collection): ParaX, LoRA")
    group.add_argument('--backbone', nargs='+', default=[],
                       help='backbones: Swin-B, ConvNeXt-L, ...')
    group.add_argument('--task', nargs='+', default=[],
                       help="a result's task or the training data set: "
                       "'Semantic Segmentation', COCO, Potsdam, ...")
    group.add_argument('--config', nargs='+', default=[],
                       help='config paths (globs): configs/lora/*coco*')
    group.add_argument('--metafile', nargs='+', default=[],
                       help='metafile.yml files or folders holding one '
                       '(default: every metafile model-index.yml imports)')
    parser.add_argument('--work-root', default='work_dirs/reproduce',
                        help='each run works in WORK_ROOT/<config name>'
                        '[/seed<N>] (default: %(default)s)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[],
                        help='one run per seed (randomness.seed), each in '
                        'its own seed<N> folder; default: one run with the '
                        "config's seed")
    parser.add_argument('--gpus', type=int,
                        help='GPUs (processes) per run (default: the '
                        "metafile's Training Resources, 8 for the paper's "
                        'recipes)')


def launch_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='gather: python tools/reproduce.py gather --help',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection(parser)
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan (one line per run: state, '
                        'GPUs, config, work dir) and run nothing')
    parser.add_argument('--launcher', choices=('local', 'slurm'),
                        default='local',
                        help='local: tools/train.py for one process, '
                        'tools/dist_train.sh for several (NNODES, NODE_RANK, '
                        'MASTER_ADDR and PORT pass through), then '
                        'tools/test.sh / dist_test.sh; slurm: '
                        'tools/slurm_train.sh and slurm_test.sh')
    parser.add_argument('--partition', help='Slurm partition')
    parser.add_argument('--gpus-per-node', type=int, default=8,
                        help='Slurm: GPUs per node (default: %(default)s)')
    parser.add_argument('--max-jobs', type=int, default=1,
                        help='Slurm: runs in flight at once (default: '
                        '%(default)s)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='config overrides for every run (training and '
                        'evaluation), e.g. data_root=/data/ade; they enter '
                        'the recorded config hash')
    return parser


def gather_parser():
    parser = argparse.ArgumentParser(
        prog=f'{osp.basename(__file__)} gather',
        description="Print the selected tables in the paper's layout: "
        "'ours / paper (delta)' per cell, the paper's # P beside it, "
        "'missing', 'running' or 'failed' where no result is there, 'stale' "
        'after a result whose config changed or that another mmparax '
        'commit produced; with several seeds mean +- std and whether the '
        'paper lies inside.')
    add_selection(parser)
    parser.add_argument('--out-dir',
                        help='also write table.md, table.json, table.csv '
                        'and table.png (ours - paper per cell) here')
    return parser


def select(args):
    models = reproduce.select_models(args.metafile, args.table, args.method,
                                     args.backbone, args.task, args.config)
    return reproduce.plan_runs(models, args.work_root, args.seeds, args.gpus,
                               getattr(args, 'cfg_options', ()))


def gather_main(argv):
    args = gather_parser().parse_args(argv)
    entries = reproduce.gather(select(args))
    print(reproduce.to_markdown(entries))
    if args.out_dir:
        paths = reproduce.write_outputs(entries, args.out_dir)
        print('wrote ' + ', '.join(paths.values()))
    return entries


def launch_main(argv):
    args = launch_parser().parse_args(argv)
    runs = select(args)
    launcher = reproduce.Launcher(args.launcher, args.partition,
                                  args.gpus_per_node)
    executor = reproduce.Executor(launcher, args.max_jobs,
                                  echo=lambda text: print(text, flush=True))
    print(reproduce.format_plan(runs), flush=True)
    if args.dry_run:
        return 0
    try:
        states = executor.run_all(runs)
    except KeyboardInterrupt:
        print('interrupted; the state of each run:', file=sys.stderr)
        print(reproduce.format_plan(runs), file=sys.stderr)
        return 130
    failed = [s for s in states.values() if s.kind == 'failed']
    print(reproduce.format_plan(runs), flush=True)
    return 1 if failed else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ['gather']:
            gather_main(argv[1:])
            return 0
        return launch_main(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f'{osp.basename(__file__)}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
