"""Figures from arrays (matplotlib's object API; no pyplot global state).

Every function returns a `matplotlib.figure.Figure`; save it with
`fig.savefig(path)`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure


def solution_grid_2d(panels: Mapping[tuple[str, str], dict],
                     rows: Sequence[str], cols: Sequence[str],
                     level_fn: Callable[[np.ndarray], np.ndarray],
                     level: float, bounds: tuple[Sequence[float],
                                                 Sequence[float]],
                     *, title: Optional[str] = None) -> Figure:
  """A rows x cols grid of 2-D solution scatter plots over a level set.

  Args:
    panels: (row, col) -> dict with 'x' (n, 2) localized solutions,
      optional 'x_posterior' (n, 2) samples before localization, and
      optional 'label' (text in the panel's corner).
    rows / cols: the row and column keys, in display order.
    level_fn: (k, 2) -> (k,) the forward function drawn as a contour.
    level: the target value (the drawn level set).
    bounds: ((x1_lo, x2_lo), (x1_hi, x2_hi)) of the plotted box.
    title: figure title.
  """
  fig = Figure(figsize=(2.6 * len(cols), 2.6 * len(rows)),
               constrained_layout=True)
  axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex=True,
                      sharey=True)
  lo, hi = np.asarray(bounds[0]), np.asarray(bounds[1])
  g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], 200),
                       np.linspace(lo[1], hi[1], 200))
  values = np.asarray(level_fn(np.stack([g1.ravel(), g2.ravel()], -1)))
  values = values.reshape(g1.shape)
  for i, row in enumerate(rows):
    for j, col in enumerate(cols):
      ax = axes[i, j]
      ax.contour(g1, g2, values, levels=[level], colors='0.6',
                 linewidths=0.8)
      panel = panels.get((row, col))
      if panel is not None:
        if panel.get('x_posterior') is not None:
          xp = np.asarray(panel['x_posterior'])
          ax.scatter(xp[:, 0], xp[:, 1], s=6, c='tab:orange', alpha=0.5,
                     linewidths=0, label='posterior')
        x = np.asarray(panel['x'])
        ax.scatter(x[:, 0], x[:, 1], s=6, c='tab:blue', linewidths=0,
                   label='localized')
        if panel.get('label'):
          ax.text(0.02, 0.02, panel['label'], transform=ax.transAxes,
                  fontsize=7, va='bottom',
                  bbox=dict(facecolor='white', alpha=0.7, lw=0))
      ax.set_xlim(lo[0], hi[0])
      ax.set_ylim(lo[1], hi[1])
      ax.set_aspect('equal')
      if i == 0:
        ax.set_title(str(col), fontsize=9)
      if j == 0:
        ax.set_ylabel(str(row), fontsize=9)
  axes[0, 0].legend(loc='upper left', fontsize=6, markerscale=2)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def training_curves(history: Mapping[str, np.ndarray],
                    keys: Sequence[str] = ('l_y', 'l_z', 'l_x', 'val_loss'),
                    *, title: Optional[str] = None) -> Figure:
  """Per-epoch loss curves (log scale) from a training history."""
  fig = Figure(figsize=(5, 3.2), constrained_layout=True)
  ax = fig.subplots()
  for k in keys:
    if k in history:
      v = np.asarray(history[k])
      ax.plot(np.arange(1, len(v) + 1), np.maximum(v, 1e-12), label=k)
  ax.set_yscale('log')
  ax.set_xlabel('epoch')
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return fig
