"""Linear CKA (Kornblith et al., ICML 2019) between the layers of a stage.

For representations X [N, p] and Y [N, q] of the same N examples, centred
over the examples,

.. math::

    \\mathrm{CKA}(X, Y) = \\frac{\\|Y^\\top X\\|_F^2}
    {\\|X^\\top X\\|_F \\, \\|Y^\\top Y\\|_F}
    = \\frac{\\langle K, L \\rangle}{\\|K\\|_F \\|L\\|_F},
    \\quad K = X X^\\top,\\ L = Y Y^\\top,

which is 1 for X against itself and invariant to orthogonal transforms and
isotropic scaling of either. The examples are images: each layer's output
is average-pooled over space, to [N, C] by default (or to an S x S grid
and flattened, [N, C * S * S]).
"""
import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.peft.parax import ParaXAdapter
from .experts import resolve_stage, site_modules


def _centred(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor)
                        else x).double()
    if x.dim() != 2:
        raise ValueError(f'a representation is [N, features], got '
                         f'{tuple(x.shape)}')
    return x - x.mean(0, keepdim=True)


def linear_cka(x, y) -> float:
    """Linear CKA of [N, p] and [N, q] (arrays or tensors); NaN when
    either has no variance across the N examples."""
    x, y = _centred(x), _centred(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f'{x.shape[0]} vs {y.shape[0]} examples')
    if x.shape[0] < 2:
        raise ValueError('CKA needs at least 2 examples')
    if x.shape[0] <= max(x.shape[1], y.shape[1]):  # N x N Gram matrices
        k, l_ = x @ x.T, y @ y.T
        cross, nx, ny = (k * l_).sum(), k.norm(), l_.norm()
    else:  # feature space
        cross = (y.T @ x).square().sum()
        nx, ny = (x.T @ x).norm(), (y.T @ y).norm()
    if nx == 0 or ny == 0:
        return float('nan')
    return float(cross / (nx * ny))


def cka_matrix(features: Sequence) -> np.ndarray:
    """[L, L] linear CKA of every pair of L representations [N, *]."""
    grams = []
    for f in features:
        x = _centred(f)
        k = x @ x.T
        grams.append((k, k.norm()))
    n = len(grams)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            (ki, ni), (kj, nj) = grams[i], grams[j]
            if ni > 0 and nj > 0:
                out[i, j] = out[j, i] = float((ki * kj).sum() / (ni * nj))
    return out


def pool_tokens(out: torch.Tensor, hw_shape, pool: int) -> torch.Tensor:
    """[B, L, C] tokens (the last H*W are the patch grid) or [B, C, H, W]
    maps -> [B, C * pool * pool], average-pooled over space."""
    if out.dim() == 3:
        if hw_shape is None:
            raise ValueError('tokens without their (H, W) grid')
        h, w = hw_shape
        out = out[:, out.shape[1] - h * w:]
        out = out.transpose(1, 2).reshape(out.shape[0], -1, h, w)
    elif out.dim() != 4:
        raise ValueError(f'cannot pool an output of shape '
                         f'{tuple(out.shape)}')
    return F.adaptive_avg_pool2d(out.float(), pool).flatten(1)


def _hw_of(args) -> Tuple[int, int]:
    for a in args[1:]:
        if isinstance(a, (tuple, list)) and len(a) == 2 and all(
                isinstance(v, int) for v in a):
            return tuple(a)
    return None


def stage_layers(backbone: nn.Module, stage: Optional[int],
                 blocks: bool = False) -> Tuple[str, List[Tuple[str, object]]]:
    """What to compare: ``('adapters', [(label, adapter)])`` when the
    stage has ParaX adapters (every site), else (or with ``blocks``)
    ``('blocks', [(label, block)])``.

    Args:
        stage (int, optional): Stage index; None: every stage (labels
            ``s<i>.`` + the label within the stage).
    """
    if stage is None:
        stages = range(len(backbone.peft_stages()))
        per_stage = [stage_layers(backbone, i, blocks) for i in stages]
        kinds = {kind for kind, _ in per_stage}
        kind = 'adapters' if kinds == {'adapters'} else 'blocks'
        if kind != 'adapters' and 'adapters' in kinds:
            per_stage = [stage_layers(backbone, i, True) for i in stages]
        return kind, [(f's{i}.{label}', m)
                      for i, (_, layers) in enumerate(per_stage)
                      for label, m in layers]
    index = resolve_stage(backbone, stage)
    adapters = site_modules(backbone, index, ParaXAdapter)
    if adapters and not blocks:
        return 'adapters', adapters
    stage_blocks = backbone.peft_stages()[index][1]
    return 'blocks', [(f'b{j}', b) for j, b in enumerate(stage_blocks)]


class FeatureRecorder:
    """Pooled outputs of layers of a host backbone during a ``with`` block.

    Adapters (or any site module) are recorded with forward hooks; blocks,
    which the host runs through ``run_block`` rather than calling them,
    by wrapping ``backbone.run_block`` for the duration of the block.

    Args:
        backbone (nn.Module): An mmparax host backbone.
        kind (str): ``'adapters'`` or ``'blocks'``.
        layers (list): ``(label, module)`` from :func:`stage_layers`.
        pool (int): Pooled grid side S. Default: 1.
    """

    def __init__(self, backbone, kind: str, layers, pool: int = 1):
        if pool < 1:
            raise ValueError(f'pool must be >= 1, got {pool}')
        self.backbone, self.kind, self.pool = backbone, kind, pool
        self.modules = [m for _, m in layers]
        self.features: Dict[int, List[torch.Tensor]] = {}
        self._stack = contextlib.ExitStack()

    def _keep(self, i, out, hw):
        self.features.setdefault(i, []).append(
            pool_tokens(out.detach(), hw, self.pool).cpu())

    def __enter__(self):
        index = {id(m): i for i, m in enumerate(self.modules)}
        if self.kind == 'adapters':
            for i, m in enumerate(self.modules):

                def hook(module, args, out, i=i):
                    self._keep(i, out, _hw_of(args))

                self._stack.callback(m.register_forward_hook(hook).remove)
        else:
            run_block = self.backbone.run_block

            def recording_run_block(forward_block, block, x, *args):
                out = run_block(forward_block, block, x, *args)
                if id(block) in index:
                    hw = args[0] if args else None
                    self._keep(index[id(block)], out, hw)
                return out

            self.backbone.run_block = recording_run_block
            self._stack.callback(vars(self.backbone).pop, 'run_block', None)
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def stacked(self) -> List[torch.Tensor]:
        """[N, C * S * S] per layer."""
        missing = [i for i in range(len(self.modules))
                   if i not in self.features]
        if missing:
            raise RuntimeError(f'layers {missing} did not run')
        return [torch.cat(self.features[i])
                for i in range(len(self.modules))]


@torch.no_grad()
def collect_features(backbone: nn.Module, kind: str, layers, inputs,
                     pool: int = 1) -> List[torch.Tensor]:
    """Pooled features of ``layers`` over ``inputs`` ([B, 3, H, W]
    batches): one [N, C * pool^2] tensor per layer."""
    with FeatureRecorder(backbone, kind, layers, pool) as recorder:
        for x in inputs:
            backbone(x)
    return recorder.stacked()


def summarise(matrix: np.ndarray) -> dict:
    """Mean off-diagonal CKA, mean CKA of consecutive layers, and the CKA of
    the first and last layer with each other."""
    n = matrix.shape[0]
    off = matrix[~np.eye(n, dtype=bool)]
    return dict(
        mean_off_diagonal=float(np.nanmean(off)) if n > 1 else None,
        mean_consecutive=float(np.nanmean(np.diag(matrix, 1)))
        if n > 1 else None,
        first_last=float(matrix[0, -1]))
