"""Models and images for the analysis tools.

A model is named by a config and what to put in it:

* a checkpoint file: a full checkpoint (what the Runner saves) or a PEFT
  (adapter-only) checkpoint over the config's pretrained backbone, loaded
  strictly as ``tools/test.py`` does (weights only, unless trusted);
* :data:`PRETRAINED`: the config's pretrained backbone (its
  ``init_cfg`` checkpoint) with every method module switched off, i.e. the
  plain frozen backbone before fine-tuning;
* nothing, with ``random_weights=True``: the config's own initialisation.

Images come from a folder (``.jpg``, ``.png``, ...; not recursive) or from
the ``val`` / ``test`` data set of a config. Each is read as
``LoadImageFromFile`` does (BGR), resized to a fixed size and normalised
with the mean, std and channel order of the config's ``data_preprocessor``.
"""
import argparse
import contextlib
import copy
import logging
import os
import os.path as osp
import re
import sys
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.runner import CheckpointLoader
from mmengine.utils import ProgressBar

from mmparax.apis.peft_checkpoint import (
    checkpoint_problems,
    fingerprint_mismatch,
    is_peft_checkpoint,
    settings_problems,
)
from mmparax.apis.runner import CheckpointMismatchError
from mmparax.apis.runtime import apply_cfg_options
from mmparax.apis.trusted_loading import (
    TRUST_FLAG,
    register_trusted_loader,
    trust_checkpoints,
)
from mmparax.peft import PEFTModule
from mmparax.utils.params import build_config_model

#: the checkpoint argument naming the config's plain pretrained backbone
PRETRAINED = 'pretrained'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')
DEFAULT_SIZE = 512


class ModelSpec(NamedTuple):
    """A config, what to load into it and its label in figures."""
    config: str
    checkpoint: Optional[str]
    label: str


# -- arguments ----------------------------------------------------------------
def tool_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a tool whose module docstring is ``doc``: its first
    paragraph as the description, the rest as the epilog."""
    return argparse.ArgumentParser(
        description=doc.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split('\n\n', 1)[1])


def add_model_arguments(parser) -> None:
    """``CONFIG [CHECKPOINT]`` pairs, ``--labels``, ``--random-weights``
    and ``--seed`` of the tools that compare models."""
    parser.add_argument(
        'models', nargs='+', metavar='CONFIG [CHECKPOINT]',
        help=f'configs, each followed by its checkpoint (or {PRETRAINED!r})')
    parser.add_argument('--labels', nargs='+', help='one label per model')
    parser.add_argument(
        '--random-weights', action='store_true',
        help='allow configs without a checkpoint: their random '
        'initialisation')
    parser.add_argument('--seed', type=int, default=0)


class Inputs(NamedTuple):
    """What :func:`resolve_inputs` makes of a tool's arguments."""
    specs: List[ModelSpec]
    cfgs: List[Config]
    paths: List[str]
    size: Tuple[int, int]
    device: torch.device


def resolve_inputs(args) -> Inputs:
    """Models, their configs, the image paths (from the first config's data
    set with ``--split``), the input size and the device of the arguments
    of :func:`add_model_arguments` and :func:`add_image_arguments`."""
    specs = parse_model_specs(args.models, args.labels, args.random_weights)
    cfgs = [load_config(s.config, args.cfg_options) for s in specs]
    paths = image_paths(cfgs[0], args.images, args.split, args.max_images)
    size = to_size(args.size) if args.size else default_size(cfgs[0])
    return Inputs(specs, cfgs, paths, size, default_device(args.device))


def add_image_arguments(parser, split: bool = True) -> None:
    """``--images``/``--split``, ``--max-images``, ``--size``, ``--device``,
    ``--cfg-options``, ``--trust-checkpoint`` and ``--out-dir``."""
    if split:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            '--images', help='folder of .jpg / .png images (not recursive)')
        source.add_argument(
            '--split',
            choices=['val', 'test'],
            help="images of the (first) config's val / test data set")
    else:
        parser.add_argument(
            '--images',
            required=True,
            help='folder of .jpg / .png images (not recursive)')
    parser.add_argument(
        '--max-images', type=int, default=None, help='use the first N images')
    parser.add_argument(
        '--size',
        type=int,
        nargs='+',
        default=None,
        help='input size, one value (square) or H W; default: the '
        "config's crop size (data_preprocessor.size, crop_size), else "
        f'{DEFAULT_SIZE}')
    parser.add_argument(
        '--device',
        default=None,
        help='torch device (default: cuda if available, else cpu)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override entries of every config, key=value (e.g. '
        'model.backbone.init_cfg.checkpoint=PATH)')
    parser.add_argument(
        TRUST_FLAG,
        action='append',
        default=[],
        metavar='PATH',
        help='a foreign pickle (or folder of them) that may be fully '
        'unpickled; checkpoints of runs and safetensors files need no trust')
    parser.add_argument(
        '--out-dir', required=True, help='folder of the figures and numbers')


def parse_model_specs(tokens: List[str],
                      labels: Optional[List[str]] = None,
                      random_weights: bool = False) -> List[ModelSpec]:
    """``CONFIG [CHECKPOINT] [CONFIG2 [CHECKPOINT2] ...]`` as specs.

    A token ending in ``.py`` starts a model; the token after it, if not a
    config, is its checkpoint (a file or :data:`PRETRAINED`). A config
    without a checkpoint needs ``random_weights``.
    """
    specs, i = [], 0
    while i < len(tokens):
        config = tokens[i]
        if not config.endswith('.py'):
            raise ValueError(f'expected a config file (.py) at {config!r}; '
                             'give models as CONFIG [CHECKPOINT] ...')
        checkpoint = None
        if i + 1 < len(tokens) and not tokens[i + 1].endswith('.py'):
            checkpoint = tokens[i + 1]
            i += 1
        i += 1
        if checkpoint is None and not random_weights:
            raise ValueError(
                f'no checkpoint given for {config}: give its checkpoint '
                f'file, {PRETRAINED!r} (the plain pretrained backbone of the '
                'config), or pass --random-weights to analyse the randomly '
                'initialised model')
        specs.append(ModelSpec(config, checkpoint, ''))
    if not specs:
        raise ValueError('give at least one CONFIG [CHECKPOINT]')
    if labels is not None and len(labels) != len(specs):
        raise ValueError(f'{len(labels)} --labels for {len(specs)} models')
    names = labels or [_default_label(s, specs) for s in specs]
    return [s._replace(label=n) for s, n in zip(specs, names)]


def _default_label(spec: ModelSpec, specs: List[ModelSpec]) -> str:
    name = osp.splitext(osp.basename(spec.config))[0]
    if sum(s.config == spec.config for s in specs) == 1:
        return name
    what = 'random' if spec.checkpoint is None else \
        osp.splitext(osp.basename(spec.checkpoint))[0]
    return f'{name}\n({what})'


def default_device(device: Optional[str] = None) -> torch.device:
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


# -- configs and models -------------------------------------------------------
def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config, applying ``--cfg-options``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        apply_cfg_options(cfg, cfg_options)
    if 'model' not in cfg:
        raise ValueError(f'{path} defines no model')
    return cfg


def default_size(cfg: Config) -> Tuple[int, int]:
    """(H, W): the data preprocessor's size, else the config's
    ``crop_size``, else a ``crop_size`` / ``scale`` of a crop in the test
    pipeline, else 512 x 512."""
    candidates = [cfg.model.get('data_preprocessor', {}).get('size'),
                  cfg.get('crop_size')]
    for step in cfg.get('test_pipeline', []) or []:
        if 'Crop' in str(step.get('type', '')):
            candidates.append(step.get('crop_size') or step.get('scale'))
    for size in candidates:
        if size is not None:
            return to_size(size)
    return DEFAULT_SIZE, DEFAULT_SIZE


def to_size(size) -> Tuple[int, int]:
    """An int or a pair as (H, W)."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f'a size is one or two positive integers (H W), '
                         f'got {size}')
    return size


def _load_file(filename: str, trusted: Iterable[str]):
    """The checkpoint object: weights only, full unpickling only if
    trusted (as ``tools/test.py``)."""
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint {filename} does not exist; give an existing '
            f'checkpoint file, {PRETRAINED!r} for the plain pretrained '
            'backbone, or --random-weights where the tool offers it')
    register_trusted_loader()
    trust_checkpoints(*trusted)
    return CheckpointLoader.load_checkpoint(filename, map_location='cpu')


def config_name(cfg: Config) -> str:
    """The file ``cfg`` was read from (``'the config'`` if none)."""
    return cfg.filename or 'the config'


def _load_pretrained_backbone(model: nn.Module, cfg: Config, what: str):
    """Load the config's ``model.backbone.init_cfg`` checkpoint (strictly,
    tensors only) into ``model.backbone``."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    backbone = getattr(model, 'backbone', None)
    if not (isinstance(init_cfg, dict) and init_cfg.get('type') ==
            'Pretrained' and init_cfg.get('checkpoint')) or \
            not hasattr(backbone, 'load_pretrained'):
        raise CheckpointMismatchError(
            f'{what} needs the pretrained backbone of {config_name(cfg)}: '
            "model.backbone must be an mmparax host with init_cfg=dict("
            "type='Pretrained', checkpoint=PATH) (set it with --cfg-options "
            'model.backbone.init_cfg.checkpoint=PATH)')
    backbone.load_pretrained(
        init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))


def load_checkpoint_strict(model: nn.Module, cfg: Config, filename: str,
                           trusted: Iterable[str] = ()) -> dict:
    """Load a full or PEFT checkpoint into ``model``, strictly.

    Raises:
        CheckpointMismatchError: Keys are missing, unexpected or of another
            shape, or a PEFT checkpoint was trained on another pretrained
            backbone than the config's.
    """
    checkpoint = _load_file(filename, trusted)
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'{filename} holds a {type(checkpoint).__name__}, not a state '
            'dict')
    state_dict = checkpoint.get('state_dict', checkpoint)
    state_dict = {re.sub(r'^module\.', '', k): v
                  for k, v in state_dict.items()}
    peft = is_peft_checkpoint(checkpoint)
    if peft:
        if getattr(getattr(model, 'backbone', None), 'peft', None) is None:
            raise CheckpointMismatchError(
                f'{filename} is a PEFT (adapter-only) checkpoint, but the '
                f'backbone of {config_name(cfg)} hosts no PEFT method')
        settings = settings_problems(checkpoint, cfg)
        if settings:
            raise CheckpointMismatchError(
                f'{filename} was trained with other method settings than '
                f'those of {config_name(cfg)}:\n' + '\n'.join(settings))
        _load_pretrained_backbone(model, cfg,
                                  f'the PEFT checkpoint {filename}')
        mismatch = fingerprint_mismatch(checkpoint, model)
        if mismatch:
            raise CheckpointMismatchError(
                f'{filename} was trained on another pretrained backbone than '
                f'that of {config_name(cfg)} '
                f'({cfg.model.backbone.init_cfg.checkpoint}): {mismatch}. '
                'Point model.backbone.init_cfg.checkpoint at the file the '
                'adapters were trained on, or give a full checkpoint')
    problems = checkpoint_problems(model, state_dict, peft)
    if problems:
        kind = 'PEFT checkpoint' if peft else 'checkpoint'
        raise CheckpointMismatchError(
            f'The {kind} {filename} does not fit the model of '
            f'{config_name(cfg)}:\n'
            + '\n'.join(problems) + '\nCheck that the config is the one the '
            'checkpoint was trained with.')
    model.load_state_dict(state_dict, strict=False)
    return checkpoint


@contextlib.contextmanager
def _quiet_init():
    """Hide the per-parameter INFO lines of ``init_weights`` (warnings,
    such as a backbone left random, still show)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(cfg: Config,
                checkpoint: Optional[str] = None,
                random_weights: bool = False,
                device='cpu',
                trusted: Iterable[str] = (),
                seed: int = 0) -> nn.Module:
    """The model of ``cfg`` in eval mode with frozen parameters.

    Args:
        checkpoint (str, optional): A checkpoint file (full or PEFT) or
            :data:`PRETRAINED`. None needs ``random_weights``.
        random_weights (bool): Allow ``checkpoint=None``: the config's own
            random initialisation (seeded by ``seed``).
        trusted (Iterable[str]): Checkpoints that may be fully unpickled.
    """
    if checkpoint is None and not random_weights:
        raise ValueError('no checkpoint: give one, or random_weights=True')
    torch.manual_seed(seed)
    model = build_config_model(copy.deepcopy(cfg))  # it edits the config
    if checkpoint is None or checkpoint == PRETRAINED:
        with _quiet_init():
            model.init_weights()
    if checkpoint == PRETRAINED:
        _load_pretrained_backbone(model, cfg, f'{PRETRAINED!r}')
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, PEFTModule):
                    module.switch_off()
    elif checkpoint is not None:
        load_checkpoint_strict(model, cfg, checkpoint, trusted)
    model.requires_grad_(False)
    return model.to(device).eval()


def get_backbone(model: nn.Module, host: bool = False) -> nn.Module:
    """``model.backbone``; with ``host``, raise unless it is an mmparax
    host backbone (one that reports its stages)."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise ValueError(f'{type(model).__name__} has no backbone')
    if host and not hasattr(backbone, 'peft_stages'):
        raise ValueError(
            f'{type(backbone).__name__} is not an mmparax host backbone '
            "(e.g. type='mmparax.Swin'): its stages and blocks are unknown")
    return backbone


# -- images -------------------------------------------------------------------
class Normalizer:
    """The ``data_preprocessor`` of a config applied to one BGR image."""

    def __init__(self, cfg: Config):
        pre = cfg.model.get('data_preprocessor') or {}
        # mmseg / mmdet: bgr_to_rgb or rgb_to_bgr, mmpretrain: to_rgb; each
        # reverses the channels of the loaded image
        if pre.get('bgr_to_rgb') and pre.get('rgb_to_bgr'):
            raise ValueError('data_preprocessor sets both bgr_to_rgb and '
                             'rgb_to_bgr')
        self.flip = bool(pre.get('bgr_to_rgb') or pre.get('rgb_to_bgr')
                         or pre.get('to_rgb'))
        self.mean = pre.get('mean')
        self.std = pre.get('std')
        if (self.mean is None) != (self.std is None):
            raise ValueError('data_preprocessor needs both mean and std')

    def __call__(self, bgr: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 BGR -> [1, 3, H, W] float."""
        img = bgr[..., ::-1] if self.flip else bgr
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        x = x.float()
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
            x = (x - mean) / std
        return x[None]


def list_images(folder: str) -> List[str]:
    """Sorted image files of ``folder`` (not recursive)."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder {folder} does not exist')
    files = sorted(
        osp.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS)
        and osp.isfile(osp.join(folder, f)))
    if not files:
        subdirs = sorted(d for d in os.listdir(folder)
                         if osp.isdir(osp.join(folder, d)))
        hint = f'; its subfolders: {subdirs[:10]}' if subdirs else ''
        raise FileNotFoundError(
            f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder} (the '
            f'folder is not searched recursively{hint})')
    return files


def dataset_images(cfg: Config, split: str) -> List[str]:
    """Image paths of the config's ``<split>_dataloader`` data set."""
    from mmengine.registry import DATASETS, init_default_scope
    loader = cfg.get(f'{split}_dataloader')
    if not loader or 'dataset' not in loader:
        raise ValueError(f'the config has no {split}_dataloader.dataset')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    try:
        dataset = DATASETS.build(loader['dataset'])
    except Exception as error:
        raise RuntimeError(
            f'could not build the {split} data set of the config ({error}); '
            'point it at the data with --cfg-options '
            f'{split}_dataloader.dataset.data_root=PATH, or give --images '
            'DIR') from error
    paths = [dataset.get_data_info(i).get('img_path')
             for i in range(len(dataset))]
    if not paths or any(p is None for p in paths):
        raise ValueError(f'the {split} data set lists no image paths')
    return paths


def image_paths(cfg: Config, images: Optional[str], split: Optional[str],
                max_images: Optional[int]) -> List[str]:
    """Images of a folder or of a data split, the first ``max_images``."""
    paths = list_images(images) if images else dataset_images(cfg, split)
    if max_images is not None:
        if max_images <= 0:
            raise ValueError(f'--max-images must be positive, got '
                             f'{max_images}')
        paths = paths[:max_images]
    return paths


def read_image(path: str, size: Tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 BGR, resized (bilinear) to ``size`` (H, W)."""
    img = mmcv.imread(path, flag='color', channel_order='bgr')
    if img is None:
        raise ValueError(f'cannot read the image {path}')
    return mmcv.imresize(img, (size[1], size[0]))


def iter_images(paths: List[str], size: Tuple[int, int],
                normalizer: Normalizer, device='cpu',
                progress: bool = True) -> Iterator[Tuple[torch.Tensor,
                                                         np.ndarray]]:
    """``(input [1, 3, H, W], RGB uint8 [H, W, 3])`` per image, with a
    progress bar on stderr."""
    bar = ProgressBar(len(paths), file=sys.stderr) if progress else None
    for path in paths:
        bgr = read_image(path, size)
        yield normalizer(bgr).to(device), bgr[..., ::-1].copy()
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stderr.write('\n')


def thumbnail(rgb: np.ndarray, side: int = 96) -> np.ndarray:
    """A small copy of an RGB image for figures."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return mmcv.imresize(rgb, (max(1, round(w * scale)),
                               max(1, round(h * scale))))


# -- outputs ------------------------------------------------------------------
def to_jsonable(obj):
    """``obj`` with arrays as lists and NaN / inf as None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: str, obj) -> str:
    import json
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(to_jsonable(obj), f, indent=1, allow_nan=False)
    return path
