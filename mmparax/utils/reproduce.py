"""Reproduce the paper's tables: plan the runs of a table from the
metafiles, run them through the repository's launchers (train, then
evaluate), and gather their metrics beside the paper's figures.

Each run has a work dir ``<work root>/<metafile name>[/seed<N>]`` holding:

- ``reproduce.json``: the run's record (status, pid and host while it runs,
  the log of the last phase, each launch with the config hash and commit);
- ``reproduce_train.log`` / ``reproduce_test.log``: the launchers' output;
- the checkpoints and ``last_checkpoint`` of mmengine (``--resume`` reads
  them);
- ``metrics.json``: the evaluation's metrics and provenance (written by
  ``tools/test.py --out-metrics``) with the training's launches; it exists
  only once the run is finished.

Every file is replaced atomically, so an interrupted command leaves each
state readable.
"""
import csv
import fnmatch
import hashlib
import io
import json
import math
import os
import os.path as osp
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import List, Optional, Sequence

from mmengine.config import Config

from .atomic_file import atomic_write
from .paper import (
    ROOT,
    config_path,
    metafile_models,
    metafiles,
    model_row,
    paper_order,
    table_layout,
)

RESULT = 'metrics.json'
RECORD = 'reproduce.json'
LOGS = dict(train='reproduce_train.log', test='reproduce_test.log')
TOOLS = osp.join(ROOT, 'tools')
#: the folders whose commits make earlier results stale (the configs are
#: covered by their hashes)
CODE = ('mmparax', 'tools')
PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'mmdet',
            'mmpretrain', 'mmparax')

#: metafile metric -> (key of the evaluator's metrics, factor to the
#: paper's percent)
METRIC_KEYS = {
    'mIoU': ('mIoU', 1),
    'box AP': ('coco/bbox_mAP', 100),
    'box AP50': ('coco/bbox_mAP_50', 100),
    'box AP75': ('coco/bbox_mAP_75', 100),
    'mask AP': ('coco/segm_mAP', 100),
    'mask AP50': ('coco/segm_mAP_50', 100),
    'mask AP75': ('coco/segm_mAP_75', 100),
    'PQ': ('coco_panoptic/PQ', 1),
    'SQ': ('coco_panoptic/SQ', 1),
    'RQ': ('coco_panoptic/RQ', 1),
    'Top 1 Accuracy': ('accuracy/top1', 1),
}
#: the paper's column names
LABELS = {'box AP': 'AP^b', 'mask AP': 'AP^m', 'Top 1 Accuracy': 'top-1'}


# -- provenance --------------------------------------------------------------


def config_sha256(config: str, cfg_options: Optional[dict] = None) -> str:
    """sha256 of the resolved text of ``config`` (a file, its ``_base_``
    files merged, or a ``Config``), ``cfg_options`` applied."""
    cfg = config.copy() if isinstance(config, Config) else \
        Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return hashlib.sha256(cfg.pretty_text.encode()).hexdigest()


def git_commit(repo: str = ROOT) -> dict:
    """The mmparax checkout's ``commit`` (HEAD), ``code_commit`` (the last
    commit that changed ``mmparax/`` or ``tools/``) and ``dirty`` (changes
    not committed); None each outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', '-C', repo, *args],
                              capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        return dict(commit=git('rev-parse', 'HEAD'),
                    code_commit=git('log', '-1', '--format=%H', '--',
                                    *CODE),
                    dirty=bool(git('status', '--porcelain', '--', '.')))
    except (OSError, subprocess.SubprocessError):
        return dict(commit=None, code_commit=None, dirty=None)


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return f'cpu ({platform.machine()})'


def write_metrics(path: str, metrics: dict, config: str,
                  cfg_options: Optional[dict], cfg: Config, checkpoint: str,
                  wall_time_s: float) -> Optional[dict]:
    """Write the evaluation's ``metrics`` with their provenance to ``path``
    (JSON, by the first process only); every process must call it."""
    from mmengine.dist import all_gather_object, get_rank, get_world_size
    devices = all_gather_object(_device_name())
    if get_rank() != 0:
        return None
    record = dict(
        metrics={k: _plain(v) for k, v in metrics.items()},
        config=dict(path=osp.abspath(config) if isinstance(config, str)
                    else f'recorded in {osp.abspath(checkpoint)}',
                    sha256=config_sha256(config, cfg_options)),
        cfg_options=_plain(dict(cfg_options or {})),
        checkpoint=dict(path=osp.abspath(checkpoint),
                        bytes=_size(checkpoint)),
        **git_commit(),
        versions=package_versions(),
        seed=cfg.get('randomness', {}).get('seed'),
        world_size=get_world_size(),
        devices=devices,
        wall_time_s=round(wall_time_s, 3),
        finished=_now())
    write_json(path, record)
    return record


def _plain(value):
    """JSON-able copy of config values and numpy / torch scalars."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, 'item'):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _size(path):
    return os.path.getsize(path) if osp.isfile(path) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


def write_json(path: str, data) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_write(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')


def read_json(path: str):
    """The JSON of ``path``, or None when it does not exist."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{path} is not valid JSON ({e}); delete it to let '
                'tools/reproduce.py rebuild the run\'s state') from None


# -- selection ---------------------------------------------------------------


@dataclass
class Run:
    """One training and evaluation: a metafile model with one seed."""
    name: str
    row: dict
    model: dict = field(repr=False)
    seed: Optional[int]
    work_dir: str
    gpus: int
    #: ``key=value`` config overrides of every run
    cfg_options: Sequence[str] = ()

    @property
    def config(self) -> str:
        return config_path(self.model)

    def options(self) -> List[str]:
        """The ``--cfg-options`` strings of the run."""
        seed = [] if self.seed is None else [f'randomness.seed={self.seed}']
        return list(self.cfg_options) + seed


def _gpus(model: dict) -> int:
    resources = str(model['Metadata'].get('Training Resources', ''))
    found = re.match(r'\s*(\d+)\s*x', resources)
    return int(found.group(1)) if found else 1


def _matches(value, patterns) -> bool:
    return not patterns or any(
        fnmatch.fnmatch(str(value).lower(), p.lower()) for p in patterns)


def select_models(sources=(), tables=(), methods=(), backbones=(), tasks=(),
                  configs=()) -> List[dict]:
    """The metafile models of ``sources`` (default: ``model-index.yml``)
    in the paper's order, filtered by paper table, method, backbone, task
    (a result's task or the training data set) and config path (globs,
    case-insensitive; each filter keeps what matches one of its values)."""
    found = []
    for metafile in metafiles(sources):
        for model in metafile_models(metafile):
            row = model_row(model)
            task_names = [r['Task'] for r in model.get('Results', [])]
            task_names += [row['data'] or '', row['task']]
            if (_matches(row['table'], tables)
                    and _matches(row['method'], methods)
                    and _matches(row['backbone'], backbones)
                    and any(_matches(t, tasks) for t in task_names)
                    and (_matches(model['Config'], configs) or _matches(
                        osp.relpath(config_path(model)), configs))):
                found.append((row, model))
    if not found:
        known = sorted({model_row(m)['table'] for f in metafiles(sources)
                        for m in metafile_models(f)}, key=_table_key)
        raise ValueError(
            'no metafile model matches the selection (--table '
            f'{list(tables)}, --method {list(methods)}, --backbone '
            f'{list(backbones)}, --task {list(tasks)}, --config '
            f'{list(configs)}); the paper tables with configs are '
            f"{', '.join(known)}")
    found.sort(key=lambda item: paper_order(item[0]))
    return [dict(model, _row=row) for row, model in found]


def _table_key(table):
    return paper_order(dict(table=table, task='', backbone='', method=''))


def plan_runs(models: List[dict], work_root: str,
              seeds: Sequence[int] = (), gpus: Optional[int] = None,
              cfg_options: Sequence[str] = ()) -> List[Run]:
    """One :class:`Run` per model and seed (``seeds`` empty: one run with
    the config's own seed, in ``<work_root>/<name>``)."""
    runs = []
    for model in models:
        base = osp.join(osp.abspath(work_root), model['Name'])
        for seed in (seeds or [None]):
            runs.append(
                Run(name=model['Name'],
                    row=model['_row'],
                    model=model,
                    seed=seed,
                    work_dir=base if seed is None else osp.join(
                        base, f'seed{seed}'),
                    gpus=gpus or _gpus(model),
                    cfg_options=tuple(cfg_options)))
    return runs


# -- state -------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(record: Optional[dict]) -> bool:
    """Whether a run's record says a command is working on it now (its
    process lives; on another host this cannot be checked and counts as
    running)."""
    if not record or record.get('status') not in ('training', 'testing'):
        return False
    if record.get('host') != socket.gethostname():
        return True
    return _alive(int(record.get('pid', -1)))


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's ``last_checkpoint`` names, if it exists."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = f.read().strip()
    if path and not osp.isabs(path):
        path = osp.join(work_dir, path)
    return path if path and osp.isfile(path) else None


def _progress(run: Run, checkpoint: str):
    """(done, total, unit) of ``checkpoint`` under the run's schedule."""
    found = re.search(r'(iter|epoch)_(\d+)\.pth$', checkpoint)
    if not found:
        return None
    unit, done = found.group(1), int(found.group(2))
    cfg = Config.fromfile(run.config)
    cfg.merge_from_dict(parse_options(run.options()))
    train_cfg = cfg.get('train_cfg', {})
    total = train_cfg.get('max_iters' if unit == 'iter' else 'max_epochs')
    return done, total, unit


@dataclass
class State:
    kind: str  # done, running, failed, trained, partial, new
    text: str
    checkpoint: Optional[str] = None
    #: what its checkpoints say (trained, partial or new): how it goes on
    progress: str = 'new'


def _checkpoint_state(run: Run) -> State:
    checkpoint = last_checkpoint(run.work_dir)
    if checkpoint is None:
        return State('new', 'new')
    progress = _progress(run, checkpoint)
    if progress and progress[1] is not None and progress[0] >= progress[1]:
        return State('trained', f'trained: {osp.basename(checkpoint)}, '
                     'not evaluated', checkpoint, 'trained')
    text = f'partial: {progress[2]} {progress[0]}/{progress[1]}' \
        if progress else f'partial: {osp.basename(checkpoint)}'
    return State('partial', text, checkpoint, 'partial')


def run_state(run: Run) -> State:
    """What a run's work dir says about it."""
    if osp.isfile(osp.join(run.work_dir, RESULT)):
        return State('done', 'done')
    record = read_json(osp.join(run.work_dir, RECORD))
    if is_running(record):
        return State('running',
                     f"running: {record['status']} (pid {record['pid']} on "
                     f"{record['host']})")
    state = _checkpoint_state(run)
    if record and record.get('status') == 'failed':
        return State('failed', f"failed: {record['log']}", state.checkpoint,
                     state.progress)
    return state


def format_plan(runs: List[Run]) -> str:
    """One line per run: state, GPUs, config, work dir."""
    states = [run_state(run) for run in runs]
    width = max(len(s.text) for s in states)
    lines = []
    for run, state in zip(runs, states):
        config = osp.relpath(run.config) if run.config.startswith(
            os.getcwd()) else run.config
        lines.append(f'{state.text:<{width}}  {run.gpus} GPU  {config}  '
                     f'{run.work_dir}')
    counts = {}
    for state in states:
        counts[state.kind] = counts.get(state.kind, 0) + 1
    lines.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}: " +
                 ', '.join(f'{n} {kind}' for kind, n in counts.items()))
    return '\n'.join(lines)


# -- launching ---------------------------------------------------------------


@dataclass
class Launcher:
    """How the runs start: ``'local'`` (``tools/train.py`` for one process,
    ``tools/dist_train.sh`` for several; ``tools/test.sh`` /
    ``tools/dist_test.sh``) or ``'slurm'`` (``tools/slurm_train.sh`` /
    ``tools/slurm_test.sh`` under ``partition``)."""
    kind: str = 'local'
    partition: Optional[str] = None
    gpus_per_node: int = 8
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ('local', 'slurm'):
            raise ValueError(f"launcher must be 'local' or 'slurm', got "
                             f'{self.kind!r}')
        if self.kind == 'slurm' and not self.partition:
            raise ValueError('--launcher slurm needs --partition PARTITION')

    def env(self, run: Run) -> dict:
        env = dict(os.environ)
        env.setdefault('PYTHON', sys.executable)
        if self.kind == 'slurm':
            env['GPUS'] = str(run.gpus)
            env['GPUS_PER_NODE'] = str(min(run.gpus, self.gpus_per_node))
        elif 'PORT' not in env and int(env.get('NNODES', '1')) == 1:
            env['PORT'] = str(_free_port())
        env.update(self.extra_env)
        return env

    def train(self, run: Run, resume: bool) -> List[str]:
        args = (['--resume'] if resume else []) + _options(run.options())
        if self.kind == 'slurm':
            return ['bash', osp.join(TOOLS, 'slurm_train.sh'),
                    self.partition, run.name, run.config, run.work_dir,
                    *args]
        if _single(run):
            return [sys.executable, osp.join(TOOLS, 'train.py'), run.config,
                    '--work-dir', run.work_dir, *args]
        return ['bash', osp.join(TOOLS, 'dist_train.sh'), run.config,
                str(run.gpus), '--work-dir', run.work_dir, *args]

    def test(self, run: Run, checkpoint: str, out: str) -> List[str]:
        args = ['--work-dir', osp.join(run.work_dir, 'test'),
                '--out-metrics', out] + _options(run.options())
        if self.kind == 'slurm':
            return ['bash', osp.join(TOOLS, 'slurm_test.sh'),
                    self.partition, run.name, run.config, checkpoint, *args]
        if _single(run):
            return ['bash', osp.join(TOOLS, 'test.sh'), run.config,
                    checkpoint, *args]
        return ['bash', osp.join(TOOLS, 'dist_test.sh'), run.config,
                checkpoint, str(run.gpus), *args]


def _single(run: Run) -> bool:
    """One process on one node: no torchrun."""
    return run.gpus == 1 and int(os.environ.get('NNODES', '1')) == 1


def _options(options: List[str]) -> List[str]:
    return ['--cfg-options', *options] if options else []


def parse_options(options: Sequence[str]) -> dict:
    """``key=value`` strings as ``--cfg-options`` reads them."""
    from argparse import Namespace

    from mmengine.config import DictAction
    namespace = Namespace()
    DictAction(option_strings=[], dest='options')(None, namespace,
                                                  list(options))
    return namespace.options if options else {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Executor:
    """Runs the plan: each run trains (or resumes) then evaluates; a failed
    run is reported and the others go on."""

    def __init__(self, launcher: Launcher, max_jobs: int = 1, echo=print):
        if max_jobs < 1:
            raise ValueError(f'--max-jobs must be at least 1, got {max_jobs}')
        if launcher.kind == 'local' and max_jobs != 1:
            raise ValueError(
                '--max-jobs applies to --launcher slurm; local runs go one '
                'after the other, each on --gpus processes')
        self.launcher = launcher
        self.max_jobs = max_jobs
        self.echo = echo
        self.writer = os.environ.get('NODE_RANK', '0') == '0'
        self.commit = git_commit()
        self._procs = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run_all(self, runs: List[Run]) -> dict:
        """Run every run; returns ``{work_dir: final State}``."""
        results = {}
        pool = ThreadPoolExecutor(self.max_jobs)
        futures = {pool.submit(self._one, run): run for run in runs}
        try:
            for future in futures:
                while True:
                    try:
                        results[futures[future].work_dir] = future.result(
                            timeout=0.5)
                        break
                    except TimeoutError:
                        continue
        except KeyboardInterrupt:
            self._stop.set()
            self._signal_all(signal.SIGINT)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return results

    def _signal_all(self, signum):
        with self._lock:
            for proc in list(self._procs):
                if proc.poll() is None:
                    proc.send_signal(signum)

    def _record(self, run: Run, **changes) -> dict:
        path = osp.join(run.work_dir, RECORD)
        record = read_json(path) or dict(
            name=run.name, config=run.config, seed=run.seed, launches=[])
        record.update(changes)
        if self.writer:
            os.makedirs(run.work_dir, exist_ok=True)
            write_json(path, record)
        return record

    def _one(self, run: Run) -> State:
        if self._stop.is_set():
            return run_state(run)
        state = run_state(run)
        tag = f'{run.name}' + ('' if run.seed is None else
                               f' (seed {run.seed})')
        if state.kind == 'running' and not self.writer:
            # the first node marked it: the other nodes join its run
            state = _checkpoint_state(run)
        if state.kind in ('done', 'running'):
            self.echo(f'{tag}: {state.text}, skipped')
            return state
        options = parse_options(run.options())
        os.makedirs(run.work_dir, exist_ok=True)
        if state.progress != 'trained':
            resume = state.checkpoint is not None
            launch = dict(time=_now(),
                          config_sha256=config_sha256(run.config, options),
                          **self.commit, launcher=self.launcher.kind,
                          gpus=run.gpus,
                          resumed_from=state.checkpoint)
            record = read_json(osp.join(run.work_dir, RECORD)) or {}
            self._record(run, launches=record.get('launches', []) + [launch])
            self.echo(f'{tag}: ' + (f'resuming from {state.checkpoint}'
                                    if resume else 'training') +
                      f' ({osp.join(run.work_dir, LOGS["train"])})')
            start = time.time()
            code = self._phase(run, 'train',
                               self.launcher.train(run, resume))
            spent = self._record(run).get('train_wall_time_s', 0)
            self._record(run, train_wall_time_s=round(
                spent + time.time() - start, 3))
            if code != 0:
                return self._failed(run, 'train', code)
            state = _checkpoint_state(run)
            if state.kind != 'trained':
                return self._failed(
                    run, 'train', code, 'training ended without the '
                    'checkpoint of its last iteration or epoch '
                    f'({state.text})')
        self.echo(f'{tag}: evaluating {state.checkpoint} '
                  f'({osp.join(run.work_dir, LOGS["test"])})')
        part = osp.join(run.work_dir, RESULT + '.part')
        code = self._phase(run, 'test',
                           self.launcher.test(run, state.checkpoint, part))
        if code != 0:
            return self._failed(run, 'test', code)
        if self.writer:
            result = read_json(part)
            if result is None:
                return self._failed(run, 'test', code,
                                    f'tools/test.py wrote no {part}')
            record = self._record(run)
            result['train'] = dict(
                launches=record.get('launches', []),
                wall_time_s=record.get('train_wall_time_s'),
                launcher=self.launcher.kind,
                gpus=run.gpus)
            write_json(osp.join(run.work_dir, RESULT), result)
            os.remove(part)
            self._record(run, status='done', pid=None)
        self.echo(f'{tag}: done')
        return run_state(run)

    def _failed(self, run, phase, code, reason=None) -> State:
        log = osp.join(run.work_dir, LOGS[phase])
        if self._stop.is_set():
            self._record(run, status='interrupted', log=log, pid=None)
            self.echo(f'{run.name}: interrupted while {phase}ing '
                      f'({log})')
            return run_state(run)
        self._record(run, status='failed', phase=phase, returncode=code,
                     log=log, pid=None)
        self.echo(f'{run.name}: FAILED in {phase} (exit {code}'
                  f"{'; ' + reason if reason else ''}): {log}")
        return run_state(run)

    def _phase(self, run: Run, phase: str, cmd: List[str]) -> int:
        """Run ``cmd`` with its output appended to the phase's log."""
        log_path = osp.join(run.work_dir, LOGS[phase])
        self._record(run, status=f'{phase}ing', phase=phase, log=log_path,
                     pid=os.getpid(), host=socket.gethostname())
        with open(log_path, 'a') as log:
            log.write(f'\n# {_now()}: {" ".join(cmd)}\n')
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.launcher.env(run), cwd=ROOT)
            with self._lock:
                self._procs.add(proc)
            try:
                code = proc.wait()
            finally:
                with self._lock:
                    self._procs.discard(proc)
        return code


# -- gathering ---------------------------------------------------------------


def headline_metrics(model: dict) -> List[str]:
    """The paper's columns of a metafile model: the first metric of each
    of its results (mIoU; box AP and mask AP; PQ; Top 1 Accuracy)."""
    return [next(iter(r['Metrics'])) for r in model.get('Results', [])
            if r.get('Metrics')]


def paper_metric(model: dict, metric: str) -> Optional[float]:
    for result in model.get('Results', []):
        if metric in (result.get('Metrics') or {}):
            return float(result['Metrics'][metric])
    return None


def our_metric(result: dict, metric: str) -> Optional[float]:
    """The paper's ``metric`` (in percent) from a ``metrics.json``."""
    if metric not in METRIC_KEYS:
        raise KeyError(f'no evaluator key is known for the metafile metric '
                       f'{metric!r}; add it to METRIC_KEYS of '
                       f'{osp.relpath(__file__, ROOT)}')
    key, factor = METRIC_KEYS[metric]
    metrics = result['metrics']
    if key not in metrics:
        return None
    return float(metrics[key]) * factor


def stale_reasons(result: dict, config: str, commit: Optional[str],
                  hashes: dict) -> List[str]:
    """Why a finished run's result no longer stands for ``config`` (the
    metafile's): its resolved text (with the run's ``cfg_options``) differs
    from the one launched or evaluated, or the evaluation ran other mmparax
    code (``code_commit``, the last commit of ``mmparax/`` and ``tools/``).
    ``hashes`` caches config hashes."""
    reasons = []
    key = (config, json.dumps(result.get('cfg_options'), sort_keys=True))
    if key not in hashes:
        hashes[key] = config_sha256(config, result.get('cfg_options')) \
            if osp.isfile(config) else None
    current = hashes[key]
    if current is None:
        reasons.append(f'{config} no longer exists')
    else:
        launched = {launch['config_sha256']
                    for launch in result.get('train', {}).get('launches', [])}
        if current != result['config']['sha256'] or launched - {current}:
            reasons.append('the config changed after the run')
    ran = result.get('code_commit')
    if commit and ran and ran != commit:
        reasons.append(f'mmparax code of commit {ran[:10]} (now '
                       f'{commit[:10]})')
    return reasons


def _spread(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean)**2 for v in values) /
                    (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def gather(runs: List[Run]) -> List[dict]:
    """One dict per metafile model: its place in the paper, the runs'
    states, and per headline metric the paper's figure, ours per seed, mean,
    std, delta and whether the paper lies inside mean +- std."""
    commit = git_commit()['code_commit']
    hashes = {}
    models = {}
    for run in runs:
        models.setdefault(run.name, []).append(run)
    out = []
    for name, model_runs in models.items():
        model = model_runs[0].model
        entry = dict(model_runs[0].row, name=name, runs=[], metrics={})
        results = []
        for run in model_runs:
            state = run_state(run)
            info = dict(seed=run.seed, work_dir=run.work_dir,
                        state=state.kind, text=state.text)
            if state.kind == 'done':
                result = read_json(osp.join(run.work_dir, RESULT))
                info['stale'] = stale_reasons(result, run.config, commit,
                                               hashes)
                results.append(result)
            entry['runs'].append(info)
        for metric in headline_metrics(model):
            values = [v for v in (our_metric(r, metric) for r in results)
                      if v is not None]
            paper = paper_metric(model, metric)
            cell = dict(paper=paper, ours=values)
            if values:
                mean, std = _spread(values)
                cell.update(mean=mean, std=std,
                            delta=None if paper is None else mean - paper)
                if len(values) > 1 and paper is not None:
                    cell['inside'] = mean - std <= paper <= mean + std
            entry['metrics'][metric] = cell
        entry['mark'] = _mark(entry['runs'])
        out.append(entry)
    return out


def _mark(runs: List[dict]) -> str:
    """missing, running, failed, stale or done: what a cell says of its
    runs."""
    kinds = [r['state'] for r in runs]
    if 'done' in kinds:
        if any(r.get('stale') for r in runs):
            return 'stale'
        return 'done' if all(k == 'done' for k in kinds) else \
            f"{kinds.count('done')}/{len(kinds)} seeds"
    for kind in ('running', 'failed'):
        if kind in kinds:
            return kind
    return 'missing'


def _number(value, digits=2):
    return f'{value:.{digits}f}'


def cell_text(entry: dict, metric: str) -> str:
    """``ours / paper (delta)``; with several seeds ``mean +- std / paper
    (delta, paper inside|outside)``; ``missing`` etc. without a result."""
    cell = entry['metrics'][metric]
    paper = '-' if cell['paper'] is None else f"{cell['paper']:.1f}"
    if not cell['ours']:
        mark = entry['mark'] if entry['mark'] != 'done' else 'missing'
        return f'{mark} / {paper}'
    ours = _number(cell['mean'])
    if len(cell['ours']) > 1:
        ours += f" ± {_number(cell['std'])}"
    text = f'{ours} / {paper}'
    notes = []
    if cell.get('delta') is not None:
        notes.append(f"{cell['delta']:+.2f}")
    if 'inside' in cell:
        notes.append('paper inside' if cell['inside'] else 'paper outside')
    if notes:
        text += f" ({', '.join(notes)})"
    if entry['mark'] not in ('done', ):
        text += f" {entry['mark']}"
    return text


def _tables(entries):
    tables = {}
    for entry in entries:
        tables.setdefault(entry['table'], []).append(entry)
    for table, rows in tables.items():
        by, columns, methods = table_layout(rows)
        unique = len({(r['method'], r[by]) for r in rows}) == len(rows)
        metrics = list(dict.fromkeys(m for r in rows for m in r['metrics']))
        labels = methods if unique else [r['name'] for r in rows]
        yield table, rows, by, columns, unique, metrics, labels


def _label(metric):
    return LABELS.get(metric, metric)


def grids(entries: List[dict]) -> List[dict]:
    """Per paper table: its ``title``, ``header`` and ``body`` (rows of
    cell texts), the row ``labels``, and per metric cell of each row its
    ``(entry, metric)`` (``cells``) and column label (``columns``)."""
    out = []
    for table, rows, by, columns, unique, metrics, labels in _tables(
            entries):
        tasks = ', '.join(dict.fromkeys(r['task'] for r in rows))
        header = ['method']
        metric_columns = []
        for column in columns:
            header += [f'{column} # P'] + [f'{column} {_label(m)}'
                                           for m in metrics]
            metric_columns += [f'{column}\n{_label(m)}' for m in metrics]
        body, cells = [], []
        for label in labels:
            line, refs = [label], []
            for column in columns:
                entry = next((r for r in rows if r[by] == column and (
                    r['method'] if unique else r['name']) == label), None)
                line.append('-' if entry is None or entry['paper_m'] is None
                            else f"{entry['paper_m']:.1f}")
                for metric in metrics:
                    if entry is None or metric not in entry['metrics']:
                        line.append('-')
                        refs.append((None, metric))
                    else:
                        line.append(cell_text(entry, metric))
                        refs.append((entry, metric))
            body.append(line)
            cells.append(refs)
        out.append(dict(
            table=table,
            title=f'Table {table} ({tasks}): ours / paper (Δ); # P: the '
            "paper's, in M",
            header=header, body=body, labels=labels, cells=cells,
            columns=metric_columns, entries=rows))
    return out


def to_markdown(entries: List[dict]) -> str:
    out = []
    for grid in grids(entries):
        header = grid['header']
        out += [f"**{grid['title']}**", '', '| ' + ' | '.join(header) + ' |',
                '|---|' + '---|' * (len(header) - 1)]
        out += ['| ' + ' | '.join(line) + ' |' for line in grid['body']]
        out.append('')
        for entry in grid['entries']:
            for run in entry['runs']:
                if run.get('stale'):
                    seed = '' if run['seed'] is None else \
                        f" (seed {run['seed']})"
                    out.append(f"stale: {entry['name']}{seed}: "
                               f"{'; '.join(run['stale'])}")
        if out[-1]:
            out.append('')
    return '\n'.join(out)


def to_csv(entries: List[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(['table', 'method', 'backbone', 'data', 'name', 'metric',
                     'paper', 'ours_mean', 'ours_std', 'seeds', 'delta',
                     'paper_inside', 'mark', 'paper_params_m', 'ours'])
    for e in entries:
        for metric, cell in e['metrics'].items():
            writer.writerow([
                e['table'], e['method'], e['backbone'], e['data'], e['name'],
                _label(metric), cell['paper'], cell.get('mean'),
                cell.get('std'), len(cell['ours']), cell.get('delta'),
                cell.get('inside'), e['mark'], e['paper_m'],
                ' '.join(str(v) for v in cell['ours'])
            ])
    return buffer.getvalue()


def to_png(entries: List[dict], path: str) -> None:
    """Heat map of ours - paper per cell, one panel per paper table; cells
    without a result carry their mark."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    tables = grids(entries)
    fig, axes = plt.subplots(
        len(tables), 1, squeeze=False,
        figsize=(max(6, 1.2 * max(len(g['columns']) for g in tables) + 2),
                 sum(0.45 * len(g['labels']) + 1.6 for g in tables)))
    for ax, grid in zip(axes[:, 0], tables):
        cells = grid['cells']
        delta = np.full((len(cells), len(grid['columns'])), np.nan)
        texts = [['-'] * len(grid['columns']) for _ in cells]
        for i, refs in enumerate(cells):
            for j, (entry, metric) in enumerate(refs):
                if entry is None:
                    continue
                cell = entry['metrics'][metric]
                mark = entry['mark'] if entry['mark'] != 'done' else ''
                if cell.get('delta') is not None:
                    delta[i, j] = cell['delta']
                    texts[i][j] = f"{cell['delta']:+.1f}\n{mark}".strip()
                else:
                    texts[i][j] = mark or 'missing'
        finite = np.isfinite(delta)
        limit = float(np.abs(delta[finite]).max()) if finite.any() else 1.0
        image = ax.imshow(np.ma.masked_invalid(delta), cmap='RdBu',
                          vmin=-limit, vmax=limit, aspect='auto')
        ax.set_facecolor('0.9')
        for i, row in enumerate(texts):
            for j, text in enumerate(row):
                dark = abs(np.nan_to_num(delta[i, j])) > 0.6 * limit
                ax.text(j, i, text, ha='center', va='center', fontsize=7,
                        color='white' if dark else 'black')
        ax.set_xticks(range(len(grid['columns'])), grid['columns'],
                      fontsize=7)
        ax.set_yticks(range(len(grid['labels'])), grid['labels'], fontsize=7)
        ax.set_title(f"Table {grid['table']}: ours - paper", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(entries: List[dict], out_dir: str) -> dict:
    """table.md, table.json, table.csv and table.png in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: osp.join(out_dir, f'table.{ext}')
             for ext in ('md', 'json', 'csv', 'png')}
    with open(paths['md'], 'w') as f:
        f.write(to_markdown(entries))
    write_json(paths['json'], entries)
    with open(paths['csv'], 'w', newline='') as f:
        f.write(to_csv(entries))
    to_png(entries, paths['png'])
    return paths
