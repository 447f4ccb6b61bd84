"""Config and environment preparation shared by ``tools/train.py`` and
``tools/test.py``.

The same code runs mmseg and mmdet configs: mmengine's Runner is generic and
the config's ``default_scope`` selects the registries. What this module adds:

- the default ``work_dir`` (``./work_dirs/<config name>``) and trusted
  checkpoint loading (:mod:`mmparax.apis.trusted_loading`);
- ``--amp``, and fp16 (``AmpOptimWrapper``) on a machine without CUDA
  through its CPU stand-in, :class:`~mmparax.engine.CPUAmpOptimWrapper`;
- distributed runs on CPU-only machines: the gloo backend instead of NCCL,
  SyncBN turned into BN, DDP without ``device_ids``. Nothing changes when
  CUDA is available.
"""
import inspect
import os
import os.path as osp
from contextlib import contextmanager
from typing import Iterable, Optional, Sequence, Union

import torch
from mmengine.config import Config, DictAction
from mmengine.dist import get_rank, init_dist, is_distributed
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from torch.nn.parallel import DistributedDataParallel

from mmparax.engine.optimizers import CPUAmpOptimWrapper
from .runner import PARTIAL_FLAG, runner_class
from .trusted_loading import (
    TRUST_ENV,
    register_trusted_loader,
    trust_checkpoints,
)

WARNING = 30
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
# arguments AmpOptimWrapper takes and OptimWrapper does not
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
CPU_FP32_OVERRIDE = '--cfg-options optim_wrapper.type=OptimWrapper'
CPU_AMP_TYPE = 'mmparax.CPUAmpOptimWrapper'


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read ``config`` (a file, or a ``Config``: a copy is changed), apply
    overrides and settle ``work_dir``.

    ``work_dir`` priority: the argument, then the config's own, then
    ``./work_dirs/<config file name without extension>``.
    """
    cfg = config.copy() if isinstance(config, Config) else \
        Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        apply_cfg_options(cfg, cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def _move_paths(node, old: str, new: str):
    """``node`` with every string that is ``old`` or a path under it moved
    to ``new``."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _move_paths(value, old, new)
    elif isinstance(node, list):
        return [_move_paths(value, old, new) for value in node]
    elif isinstance(node, tuple):
        return tuple(_move_paths(value, old, new) for value in node)
    elif isinstance(node, str):
        if node.rstrip('/') == old:
            return new
        if node.startswith(old + '/'):
            return osp.join(new, node[len(old) + 1:])
    return node


def apply_cfg_options(cfg: Config, cfg_options: dict) -> None:
    """Merge ``--cfg-options`` into ``cfg``.

    ``data_root=PATH`` also moves every path the config derived from its
    top-level ``data_root`` (each data loader's ``dataset.data_root``, the
    COCO evaluators' ``ann_file``, ...): the configs compute those when
    they are read, so overriding ``data_root`` alone would change nothing.
    For the same reason an override of the method configs' ``peft``
    variable is refused, naming ``model.backbone.peft``.
    """
    cfg_options = dict(cfg_options)
    data_root = cfg_options.pop('data_root', None)
    if data_root is not None:
        old = cfg.get('data_root')
        if not isinstance(old, str):
            raise ValueError(
                f'--cfg-options data_root={data_root}: the config defines no '
                'top-level data_root; set the data set of each loader, e.g. '
                'train_dataloader.dataset.data_root=PATH')
        old = old.rstrip('/')
        for key in list(cfg.keys()):
            cfg[key] = _move_paths(cfg[key], old, data_root.rstrip('/'))
    variable = [k for k in cfg_options if k.split('.')[0] == 'peft']
    if variable and 'peft' in cfg:
        raise ValueError(
            f'--cfg-options {variable[0]}=...: `peft` is the variable the '
            'config builds model.backbone.peft from, read when the config is '
            'read; changing it now changes nothing. Override '
            f'model.backbone.{variable[0]} instead.')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)


def setup_checkpoint_trust(cfg: Config, trusted: Iterable[str] = ()) -> None:
    """Install the weights-only loaders; trust ``trusted``.

    Every loader of mmengine's ``CheckpointLoader`` (local files, URLs and
    the other ``scheme://`` paths) is replaced by one that loads with
    ``weights_only=True`` and the allow-list of Runner checkpoints (every
    file a run writes). Full unpickling is left to the paths named by the
    user (``trusted``: ``--trust-checkpoint``), for foreign pickles.
    """
    register_trusted_loader()
    trust_checkpoints(*trusted)


def on_cpu() -> bool:
    """Whether the run has no CUDA device (mmengine then runs on the CPU)."""
    return not torch.cuda.is_available()


def _optim_wrapper_class(type_):
    if inspect.isclass(type_):
        return type_
    try:
        return OPTIM_WRAPPERS.get(type_)
    except KeyError:
        return None


def is_amp(optim_wrapper: Optional[dict]) -> bool:
    """Whether an ``optim_wrapper`` config trains with mixed precision."""
    if not isinstance(optim_wrapper, dict):
        return False
    type_ = optim_wrapper.get('type', 'OptimWrapper')
    cls = _optim_wrapper_class(type_)
    if cls is None:
        return isinstance(type_, str) and \
            type_.split('.')[-1] == 'AmpOptimWrapper'
    return issubclass(cls, AmpOptimWrapper)


def enable_amp(cfg: Config) -> None:
    """``--amp``: switch a plain ``OptimWrapper`` to fp16 with dynamic
    loss scale (on the CPU, :func:`check_optim_wrapper` then swaps in the
    CPU stand-in)."""
    optim_wrapper = cfg.get('optim_wrapper')
    if is_amp(optim_wrapper):
        print_log(
            '--amp: the config already trains with AmpOptimWrapper.',
            logger='current',
            level=WARNING)
        return
    type_ = (optim_wrapper or {}).get('type', 'OptimWrapper')
    if type_ != 'OptimWrapper':
        raise ValueError('--amp can only replace optim_wrapper.type='
                         f"'OptimWrapper', but the config has {type_!r}.")
    optim_wrapper.type = 'AmpOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def check_optim_wrapper(cfg: Config, config_name: str = 'the config') -> None:
    """Run fp16 on the CPU with the stand-in; tidy an fp32 override.

    Without CUDA, a config whose ``optim_wrapper`` is mmengine's
    ``AmpOptimWrapper`` (which refuses the CPU) gets
    ``mmparax.CPUAmpOptimWrapper``: float16 autocast and loss scaling on the
    CPU; other AMP wrappers raise, naming the override that trains in fp32.
    When the type was overridden to ``OptimWrapper``, drop the AMP-only keys
    (``loss_scale``, ...) the config still holds, with a logged warning.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if not isinstance(optim_wrapper, dict):
        return
    if is_amp(optim_wrapper):
        if not on_cpu():
            return
        cls = _optim_wrapper_class(optim_wrapper.get('type'))
        if cls is AmpOptimWrapper:
            optim_wrapper.type = CPU_AMP_TYPE
        elif cls is None or not issubclass(cls, CPUAmpOptimWrapper):
            raise RuntimeError(
                f'{config_name} trains in fp16 mixed precision with '
                f'optim_wrapper.type={optim_wrapper.get("type")!r}, which '
                'needs a CUDA GPU; this machine has none. Use '
                f"optim_wrapper.type='AmpOptimWrapper' (run on the CPU by "
                f'{CPU_AMP_TYPE}), or add {CPU_FP32_OVERRIDE} to train in '
                'fp32.')
        return
    if optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
        dropped = [k for k in AMP_ONLY_KEYS if k in optim_wrapper]
        for key in dropped:
            optim_wrapper.pop(key)
        if dropped:
            print_log(
                'optim_wrapper.type is OptimWrapper (fp32): dropped the '
                f'AmpOptimWrapper-only keys {dropped} of the config.',
                logger='current',
                level=WARNING)


def apply_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume``: ``'auto'`` resumes from the latest checkpoint of
    ``work_dir``, a path resumes from that file, None leaves the config."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume


def _sync_bn_to_bn(node, path, converted):
    if isinstance(node, dict):
        type_ = node.get('type')
        if isinstance(type_, str) and type_.split('.')[-1] in SYNC_BN_TYPES:
            node['type'] = 'BN'
            converted.append(path)
        for key, value in node.items():
            _sync_bn_to_bn(value, f'{path}.{key}' if path else key, converted)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _sync_bn_to_bn(value, f'{path}[{i}]', converted)


@contextmanager
def _cuda_set_device_skipped():
    """mmengine's ``init_dist`` pins a CUDA device before creating the
    process group, which raises without a GPU; on the CPU there is nothing
    to pin."""
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _log_rank0(msg: str, level: int = 20) -> None:
    if get_rank() == 0:
        print_log(msg, logger='current', level=level)


def prepare_cpu_distributed(cfg: Config) -> None:
    """Adapt a distributed run to a machine without CUDA, and start it.

    With ``cfg.launcher`` other than ``'none'`` and no CUDA device:

    - NCCL (CUDA only) is replaced by gloo and the process group is created
      here, before the Runner (whose ``init_dist`` requires a GPU);
    - SyncBN / MMSyncBN layers of the config become BN (SyncBN needs CUDA
      under DDP; the Runner reverts it only when not distributed);
    - the DDP wrapper gets ``device_ids=None`` (the Runner passes
      ``[LOCAL_RANK]``, which DDP rejects for a CPU model).

    Every change is logged (by rank 0). With CUDA, or without a launcher,
    nothing happens and mmengine behaves as usual.
    """
    if cfg.get('launcher', 'none') == 'none' or not on_cpu():
        return
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = {}
    env_cfg = cfg.env_cfg
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    requested = dist_cfg.pop('backend', 'nccl')
    backend = 'gloo' if requested == 'nccl' else requested
    env_cfg['dist_cfg'] = dict(dist_cfg, backend=backend)
    if not is_distributed():
        with _cuda_set_device_skipped():
            init_dist(cfg.launcher, backend=backend, **dist_cfg)
    if requested != backend:
        _log_rank0(
            f'No CUDA device: distributed {cfg.launcher} run on the CPU with '
            f'the {backend} backend instead of {requested}.', WARNING)

    converted = []
    for key in list(cfg.keys()):
        _sync_bn_to_bn(cfg[key], key, converted)
    if converted:
        _log_rank0(
            'No CUDA device: SyncBN cannot run under DDP on the CPU; using '
            'BN (statistics per process) in ' + ', '.join(converted), WARNING)
    if cfg.get('sync_bn') is not None:
        _log_rank0(f'No CUDA device: ignoring sync_bn={cfg.sync_bn!r}.',
                   WARNING)
        cfg.sync_bn = None

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # what Runner.wrap_model builds by default, minus device_ids
        wrapper = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cls = MODEL_WRAPPERS.get(
        wrapper.get('type', 'MMDistributedDataParallel'))
    if wrapper_cls is not None and issubclass(wrapper_cls,
                                              DistributedDataParallel):
        wrapper['device_ids'] = None
        _log_rank0(f'No CUDA device: {wrapper_cls.__name__} wraps the CPU '
                   'model with device_ids=None.')
    cfg.model_wrapper_cfg = wrapper


def set_show_dir(cfg: Config, show_dir: str) -> None:
    """Draw test predictions into ``show_dir`` via the visualization hook.

    Hooks with a ``test_out_dir`` argument (mmdet) get it; otherwise (mmseg)
    the visualizer saves into ``show_dir``.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs a visualization hook in '
                           "default_hooks (e.g. mmseg's SegVisualizationHook "
                           "or mmdet's DetVisualizationHook).")
    hook['draw'] = True
    with HOOKS.switch_scope_and_registry(cfg.get('default_scope')) as reg:
        hook_cls = reg.get(hook['type'])
    if hook_cls is not None and 'test_out_dir' in inspect.signature(
            hook_cls.__init__).parameters:
        hook['test_out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir


def set_out(cfg: Config, out: str) -> None:
    """Save raw test predictions.

    mmseg configs (``default_scope='mmseg'``): ``out`` is a folder of
    predicted label maps (``IoUMetric(output_dir=out)``). Otherwise ``out``
    is a ``.pkl`` file of every prediction (mmdet's ``DumpDetResults``, or
    mmengine's ``DumpResults``).
    """
    evaluator = cfg.test_evaluator
    if cfg.get('default_scope') == 'mmseg':
        metrics = evaluator if isinstance(evaluator, list) else [evaluator]
        for metric in metrics:
            metric['output_dir'] = out
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must name a .pkl file, got {out!r}')
    dump = 'DumpDetResults' if cfg.get('default_scope') == 'mmdet' \
        else 'mmengine.DumpResults'
    metrics = list(evaluator) if isinstance(evaluator, list) else [evaluator]
    cfg.test_evaluator = metrics + [dict(type=dump, out_file_path=out)]


def build_runner(cfg: Config) -> Runner:
    """:class:`PEFTRunner` (strict checkpoint loading, safe saves), or the
    config's ``runner_type`` with the same behaviour
    (:func:`~mmparax.apis.runner.runner_class`)."""
    with RUNNERS.switch_scope_and_registry(
            cfg.get('default_scope')) as registry:
        cls = runner_class(cfg.get('runner_type'), registry)
    return cls.from_cfg(cfg)


AVERAGE_BUFFERS_HOOK = 'mmparax.AverageBuffersHook'


def add_average_buffers_hook(cfg: Config) -> None:
    """A distributed training run gets :class:`AverageBuffersHook` in
    ``cfg.custom_hooks`` (once): every rank then validates with, and rank 0
    saves, the same buffers (BN statistics that do not sync differ per
    rank)."""
    if cfg.get('launcher', 'none') == 'none':
        return
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(
            isinstance(h, dict) and h.get('type') == AVERAGE_BUFFERS_HOOK
            for h in hooks):
        cfg.custom_hooks = hooks + [dict(type=AVERAGE_BUFFERS_HOOK)]


def setup_run(cfg: Config,
              trusted: Sequence[str] = (),
              train: bool = True,
              config_name: str = 'the config') -> None:
    """Everything between the parsed config and the Runner."""
    setup_checkpoint_trust(cfg, trusted)
    if train:
        check_optim_wrapper(cfg, config_name)
        add_average_buffers_hook(cfg)
    prepare_cpu_distributed(cfg)


def finish_run() -> None:
    """Leave the process group once the run is over.

    A gloo process group left to the interpreter's exit can abort a rank
    ("terminate called without an active exception") after the work is
    done; a barrier then an explicit teardown ends every rank cleanly.
    """
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def add_trust_argument(parser) -> None:
    """``--trust-checkpoint PATH`` (repeatable)."""
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help='a checkpoint file, or a folder, whose files may be fully '
        'unpickled (torch.load(weights_only=False), which can run code: only '
        'for files you trust). Only foreign pickles need it: checkpoints of '
        'mmengine Runners (every file a run writes) and safetensors files '
        'load without; other files must load with weights_only=True unless '
        f'named here or in ${TRUST_ENV} (paths joined by {os.pathsep!r}). '
        'Repeatable')


def add_run_arguments(parser) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share:
    ``--trust-checkpoint``, ``--partial-load``, ``--cfg-options``,
    ``--launcher`` and ``--local-rank``."""
    add_trust_argument(parser)
    parser.add_argument(
        PARTIAL_FLAG,
        action='store_true',
        help='load checkpoints (load_from, --resume, the test checkpoint) '
        'even where they do not fit the model, listing what does not; by '
        'default a mismatch stops the run before it starts')
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


def parse_run_args(parser, argv=None):
    """Parse, and export ``--local-rank`` as ``LOCAL_RANK`` if unset."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
