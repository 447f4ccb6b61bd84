"""Figures of the analysis tools (matplotlib, Agg backend: no display)."""
import os
import os.path as osp
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
MAX_TICKS = 24


def save(fig, path: str) -> str:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches='tight')
    plt.close(fig)
    return path


def _ticks(ax, labels: Sequence[str], axis: str, rotate: bool = False):
    step = max(1, int(np.ceil(len(labels) / MAX_TICKS)))
    pos = list(range(0, len(labels), step))
    shown = [labels[i] for i in pos]
    if axis == 'x':
        ax.set_xticks(pos)
        ax.set_xticklabels(shown, rotation=90 if rotate else 0, fontsize=7)
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(shown, fontsize=7)


def _annotate(ax, values: np.ndarray):
    rows, cols = values.shape
    if rows * cols > 120:
        return
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f'{v:.2f}', ha='center', va='center',
                        fontsize=7, color='white' if v < 0.6 else 'black')


def _gate_range(values: np.ndarray):
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    return 0.0, max(1.0, float(top))


def gate_heatmaps(mean: np.ndarray, rows: Sequence[str],
                  groups: Sequence[str], path: str,
                  title: Optional[str] = None) -> str:
    """One heatmap per gate group: rows = adapters, columns = experts.

    Args:
        mean (ndarray): [adapters, groups, M].
    """
    A, G, M = mean.shape
    vmin, vmax = _gate_range(mean)
    fig, axes = plt.subplots(
        1, G, figsize=(0.6 + G * max(1.6, 0.35 * M + 0.8),
                       1.2 + max(1.2, 0.3 * A)),
        squeeze=False, layout='constrained')
    for g, ax in enumerate(axes[0]):
        im = ax.imshow(mean[:, g], cmap='viridis', vmin=vmin, vmax=vmax,
                       aspect='auto')
        _annotate(ax, mean[:, g])
        ax.set_title(groups[g], fontsize=9)
        _ticks(ax, [str(m) for m in range(M)], 'x')
        ax.set_xlabel('expert', fontsize=8)
        if g == 0:
            _ticks(ax, list(rows), 'y')
        else:
            ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.04, pad=0.02,
                 label='gate')
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def gate_grid(gates: np.ndarray, thumbs: List[np.ndarray],
              rows: Sequence[str], groups: Sequence[str], path: str,
              names: Optional[Sequence[str]] = None) -> str:
    """Per-image gates: one row per image (its thumbnail, then one heatmap
    per group).

    Args:
        gates (ndarray): [n, adapters, groups, M].
        thumbs (list[ndarray]): n RGB images.
    """
    n, A, G, M = gates.shape
    vmin, vmax = _gate_range(gates)
    fig, axes = plt.subplots(
        n, G + 1, figsize=(1.6 + G * max(1.4, 0.3 * M + 0.7),
                           0.4 + n * max(1.3, 0.28 * A + 0.4)),
        squeeze=False, layout='constrained')
    for i in range(n):
        axes[i, 0].imshow(thumbs[i])
        axes[i, 0].set_axis_off()
        if names is not None:
            axes[i, 0].set_title(names[i], fontsize=7)
        for g in range(G):
            ax = axes[i, g + 1]
            im = ax.imshow(gates[i, :, g], cmap='viridis', vmin=vmin,
                           vmax=vmax, aspect='auto')
            _annotate(ax, gates[i, :, g])
            if i == 0:
                ax.set_title(groups[g], fontsize=9)
            if i == n - 1:
                _ticks(ax, [str(m) for m in range(M)], 'x')
                ax.set_xlabel('expert', fontsize=8)
            else:
                ax.set_xticks([])
            if g == 0:
                _ticks(ax, list(rows), 'y')
            else:
                ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), fraction=0.03,
                 pad=0.02, label='gate')
    return save(fig, path)


def erf_panels(maps: Sequence[np.ndarray], labels: Sequence[str], path: str,
               notes: Optional[Sequence[str]] = None,
               scale: str = 'log10(1 + ERF) / max',
               title: Optional[str] = None) -> str:
    """Normalised ERF maps side by side, one panel per model."""
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(0.8 + 3.0 * n, 3.6),
                             squeeze=False, layout='constrained')
    for i, ax in enumerate(axes[0]):
        # 32 colours, no resampling: noisy maps stay small as PNG
        im = ax.imshow(maps[i], cmap=plt.get_cmap('RdYlGn', 32), vmin=0,
                       vmax=1, interpolation='nearest')
        ax.set_title(labels[i], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if notes is not None:
            ax.set_xlabel(notes[i], fontsize=7)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02,
                 label=scale)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def cka_panels(matrices: Sequence[np.ndarray], labels: Sequence[str],
               layers: Sequence[Sequence[str]], path: str,
               title: Optional[str] = None, vmin: float = 0.0) -> str:
    """Layer x layer CKA heatmaps side by side, one panel per model; the
    colours span [vmin, 1]."""
    n = len(matrices)
    side = max(2.6, min(6.0, 0.22 * max(len(x) for x in layers) + 1.6))
    fig, axes = plt.subplots(1, n, figsize=(0.8 + side * n, side + 0.8),
                             squeeze=False, layout='constrained')
    for i, ax in enumerate(axes[0]):
        im = ax.imshow(matrices[i], cmap='magma', vmin=vmin, vmax=1,
                       origin='lower')
        if len(layers[i]) <= 8:
            _annotate(ax, matrices[i])
        ax.set_title(labels[i], fontsize=9)
        _ticks(ax, list(layers[i]), 'x', rotate=True)
        if i == 0 or list(layers[i]) != list(layers[i - 1]):
            _ticks(ax, list(layers[i]), 'y')
        else:
            ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02,
                 label='linear CKA')
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)
