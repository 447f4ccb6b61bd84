"""Running the repository's ``tools/`` scripts from tests and demos."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

from mmparax.apis.trusted_loading import TRUST_ENV

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_tool(script: str, *args, cwd, env: dict = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` with this interpreter and return the process.

    The run starts from the caller's environment without the user's trusted
    checkpoints (``MMPARAX_TRUSTED_CHECKPOINTS``), plus ``env``; output is
    captured as text.
    """
    full_env = dict(os.environ)
    full_env.pop(TRUST_ENV, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', script), *map(str, args)],
        cwd=str(cwd),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout)


def load_tool(script: str):
    """``tools/<script>`` imported as a module (its ``main(argv)`` then runs
    in this process)."""
    name = 'mmparax_tools_' + osp.splitext(script)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_ok(proc: subprocess.CompletedProcess) -> None:
    """Assert that a :func:`run_tool` process succeeded; show its output
    tails otherwise."""
    assert proc.returncode == 0, (
        f'exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
        f'--- stderr\n{proc.stderr[-6000:]}')


DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'parax_swin-tiny_upernet_1xb4-300i_demo-64x64.py')

SHORT_DEMO = """\
_base_ = [{demo!r}]
data_root = {data_root!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(backbone=dict(init_cfg=dict(checkpoint={pretrained!r})))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)
]
train_cfg = dict(max_iters={total}, val_interval={interval})
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={interval}, max_keep_ckpts={keep}))
"""


def short_demo_config(root: str, total: int, interval: int,
                      max_keep_ckpts: int = -1, num_train: int = 16,
                      num_val: int = 4, extra: str = '') -> str:
    """The demo recipe (drop path, one data worker, random augmentations)
    cut to ``total`` iterations, with a checkpoint and a validation every
    ``interval``, on a synthetic ADE20K set and a random tiny Swin written
    into ``root``. Returns the path of the config (``root/short_demo.py``);
    ``extra`` is appended to it."""
    from .checkpoints import (
        swin_to_microsoft,
        tiny_swin_state_dict,
        write_checkpoint,
    )
    from .data import make_ade20k
    data_root = make_ade20k(
        osp.join(root, 'ade'), num_train=num_train, num_val=num_val,
        img_size=(64, 64), num_classes=8, seed=0)
    pretrained = write_checkpoint(
        osp.join(root, 'swin.pth'),
        swin_to_microsoft(tiny_swin_state_dict(0)))
    path = osp.join(root, 'short_demo.py')
    with open(path, 'w') as f:
        f.write(
            SHORT_DEMO.format(
                demo=DEMO_CONFIG, data_root=data_root, pretrained=pretrained,
                total=total, interval=interval, keep=max_keep_ckpts) + extra)
    return path


def check_weights_only(work_dir) -> list:
    """Load every ``*.pth`` of ``work_dir`` with ``torch.load(weights_only=
    True)`` and the Runner's allow-list (raises on any other global);
    returns the file names."""
    import torch

    from mmparax.utils.restricted_load import RUNNER_GLOBALS
    names = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    assert names, f'no checkpoint in {work_dir}'
    for name in names:
        with torch.serialization.safe_globals(RUNNER_GLOBALS):
            torch.load(osp.join(work_dir, name), map_location='cpu',
                       weights_only=True)
    return names


def two_iteration_options(data_root: str, size: int) -> list:
    """``--cfg-options`` values that run a UperNet config (mmseg's
    ADE20K-style pipelines) for two float32 iterations on the CPU over the
    data set at ``data_root``, at ``size`` x ``size``, logging every
    iteration, with in-process data loading."""
    options = [
        'optim_wrapper.type=OptimWrapper',  # fp32 on the CPU
        'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
        'default_hooks.logger.interval=1', 'randomness.seed=0',
        f'model.data_preprocessor.size=({size},{size})',
        # RandomResize / RandomCrop are the third / fourth training steps,
        # Resize the second test step
        f'train_dataloader.dataset.pipeline.2.scale=({size},{size})',
        f'train_dataloader.dataset.pipeline.3.crop_size=({size},{size})',
        f'test_dataloader.dataset.pipeline.1.scale=({size},{size})',
        f'val_dataloader.dataset.pipeline.1.scale=({size},{size})',
    ]
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={data_root}',
                    f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    return options
