"""Which experts the ParaX routers pick.

Every :class:`~mmparax.peft.parax.ParaXAdapter` routes its input into M
experts per group (``W1`` the down projection, ``W2`` the up projection,
then one group per routed kernel size): ``adapter.route(pooled)`` returns
``[B, num_groups, M]`` gates. :class:`GateRecorder` records exactly those
gates by wrapping ``route`` of each adapter for the duration of a ``with``
block.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from mmparax.peft.parax import ParaXAdapter


def group_names(adapter: ParaXAdapter) -> List[str]:
    """Names of the gate groups, in the order of ``route``'s output."""
    return ['W1 (down)', 'W2 (up)'] + [
        f'K{k}x{k}' for k in adapter.kernel_sizes
    ]


def resolve_stage(backbone: nn.Module, stage: int) -> int:
    """``stage`` (negative: from the end) as an index of
    ``backbone.peft_stages()``; raises when out of range."""
    num = len(backbone.peft_stages())
    if not -num <= stage < num:
        raise ValueError(f'stage {stage} does not exist: '
                         f'{type(backbone).__name__} has {num} stages '
                         f'(0..{num - 1})')
    return stage % num


def site_modules(backbone: nn.Module, stage: int,
                 kind: type = nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(label, module)`` of every ``kind`` module at a block site of a
    stage, by block, then in the host's site order; labels ``b<j>.<site>``.
    """
    blocks = backbone.peft_stages()[resolve_stage(backbone, stage)][1]
    found = []
    for j, block in enumerate(blocks):
        for site, attr in backbone.block_sites.items():
            module = block._modules.get(attr)
            if isinstance(module, kind):
                found.append((f'b{j}.{site}', module))
    return found


def stage_adapters(backbone: nn.Module, stage: int,
                   site: Optional[str] = None
                   ) -> List[Tuple[str, ParaXAdapter]]:
    """The ParaX adapters of ``stage`` at ``site``, one per block.

    Args:
        site (str, optional): A block site; None: the host's last site after
            a residual add (Swin ``post_mlp``, ConvNeXt ``post_block``).

    Raises:
        ValueError: The backbone hosts no ParaX adapters, or none at
            ``site`` of ``stage`` (the message lists where they are).
    """
    if not hasattr(backbone, 'peft_stages'):
        raise ValueError(
            f'{type(backbone).__name__} is not an mmparax host backbone: '
            'expert activations need a ParaX model')
    if not any(isinstance(m, ParaXAdapter) for m in backbone.modules()):
        method = getattr(backbone, 'peft', None)
        what = 'no PEFT method' if method is None else method.name
        raise ValueError(
            f'{type(backbone).__name__} hosts {what}, not ParaX: expert '
            "activations need a ParaX model (peft=dict(type='ParaX', ...))")
    if site is None:
        residual = backbone.residual_sites
        if not residual:
            raise ValueError(f'{type(backbone).__name__} has no residual '
                             'site; give --site')
        site = residual[-1]
    if site not in backbone.block_sites:
        raise ValueError(f'{type(backbone).__name__} has no site {site!r}; '
                         f'its sites: {tuple(backbone.block_sites)}')
    index = resolve_stage(backbone, stage)
    found = site_modules(backbone, index, ParaXAdapter)
    chosen = [(label, m) for label, m in found
              if label.split('.', 1)[1] == site]
    if not chosen:
        sites = sorted({label.split('.', 1)[1] for label, _ in found})
        raise ValueError(f'stage {index} has no ParaX adapter at {site!r}; '
                         f'its adapters sit at {sites}')
    return chosen


class GateRecorder:
    """Record the gates of adapters while a ``with`` block runs.

    ``adapter.route`` is replaced by a wrapper (an instance attribute) that
    calls the original method and keeps its output; leaving the block
    restores the method. After each forward, :meth:`pop` returns the gates
    of one batch.

    Args:
        adapters (Sequence[ParaXAdapter]): Adapters to record.
        keep_inputs (bool): Keep the pooled inputs of ``route`` too
            (``inputs``). Default: False.
    """

    def __init__(self, adapters: Sequence[ParaXAdapter],
                 keep_inputs: bool = False):
        self.adapters = list(adapters)
        self.keep_inputs = keep_inputs
        self.gates: Dict[int, List[torch.Tensor]] = {}
        self.inputs: Dict[int, List[torch.Tensor]] = {}

    def _wrap(self, i: int, adapter: ParaXAdapter):
        route = adapter.route  # the bound method

        def recording_route(pooled):
            gates = route(pooled)
            self.gates.setdefault(i, []).append(gates.detach().float().cpu())
            if self.keep_inputs:
                self.inputs.setdefault(i, []).append(pooled.detach().cpu())
            return gates

        return recording_route

    def __enter__(self):
        if any('route' in vars(a) for a in self.adapters):
            raise RuntimeError('the route of an adapter is already being '
                               'recorded')
        for i, adapter in enumerate(self.adapters):
            adapter.route = self._wrap(i, adapter)
        return self

    def __exit__(self, *exc):
        for adapter in self.adapters:
            vars(adapter).pop('route', None)
        return False

    def pop(self) -> torch.Tensor:
        """Gates of the last forward: [B, adapters, groups, M_max].

        Centers with fewer experts than the largest are padded with NaN.
        """
        if len(self.gates) != len(self.adapters):
            missing = [i for i in range(len(self.adapters))
                       if i not in self.gates]
            raise RuntimeError(f'adapters {missing} did not run in the '
                               'forward pass')
        per_adapter = [torch.cat(self.gates[i]) for i in
                       range(len(self.adapters))]
        self.gates.clear()
        m = max(g.shape[-1] for g in per_adapter)
        padded = [
            torch.nn.functional.pad(g, (0, m - g.shape[-1]), value=math.nan)
            for g in per_adapter
        ]
        return torch.stack(padded, dim=1)


@torch.no_grad()
def record_gates(backbone: nn.Module, adapters: Sequence[ParaXAdapter],
                 inputs) -> np.ndarray:
    """Gates of ``adapters`` for each input.

    Args:
        inputs (Iterable[Tensor]): Batches [B, 3, H, W] for ``backbone``.

    Returns:
        ndarray: [N, adapters, groups, M] float32.
    """
    out = []
    with GateRecorder(adapters) as recorder:
        for x in inputs:
            backbone(x)
            out.append(recorder.pop())
    if not out:
        raise ValueError('no inputs')
    return torch.cat(out).numpy()


def summarise(gates: np.ndarray) -> dict:
    """Mean, std and top-1 share (how often each expert has the largest
    gate) over the images of [N, adapters, groups, M] gates; each
    [adapters, groups, M], NaN for padded experts."""
    top = np.argmax(np.nan_to_num(gates, nan=-np.inf), axis=-1)
    m = gates.shape[-1]
    share = np.stack([(top == e).mean(axis=0) for e in range(m)], axis=-1)
    share[np.isnan(gates[0])] = np.nan
    # padded experts are NaN in every image: their mean is NaN too
    valid = ~np.isnan(gates)
    total = np.where(valid, gates, 0).sum(axis=0)
    count = valid.sum(axis=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    sq = np.where(valid, (gates - mean)**2, 0).sum(axis=0)
    std = np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)
    return dict(mean=mean, std=std, top1_share=share)
