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
      v = np.asarray(history[k], float)
      # Terms not computed at an epoch (weight 0) are logged as 0: not drawn.
      ax.plot(np.arange(1, len(v) + 1), np.where(v > 0, v, np.nan), label=k)
  ax.set_yscale('log')
  ax.set_xlabel('epoch')
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return fig


def _panel_axes(count: int, size: tuple[float, float]):
  """A figure with `count` side-by-side axes (a 1-D array)."""
  fig = Figure(figsize=(size[0] * count, size[1]), constrained_layout=True)
  return fig, fig.subplots(1, count, squeeze=False)[0]


def arm_configurations(panels: Mapping[str, np.ndarray], target,
                       *, max_arms: int = 200,
                       title: Optional[str] = None) -> Figure:
  """Planar arms drawn as polylines, one panel per set of solutions.

  Args:
    panels: panel title -> (n, P, 2) points of each arm (base first, end
      point last; e.g. `robot_arm.joint_positions(x)`). Rows with a
      non-finite point are not drawn.
    target: (2,) the end point the arms should reach (marked).
    max_arms: draw at most this many arms per panel (the first ones).
    title: figure title.
  """
  if not panels:
    raise ValueError('panels is empty')
  target = np.asarray(target, float).reshape(-1)
  if target.shape != (2,):
    raise ValueError(f'target must have shape (2,), got {target.shape}')
  fig, axes = _panel_axes(len(panels), (3.4, 3.4))
  for ax, (name, points) in zip(axes, panels.items()):
    points = np.asarray(points, float)
    if points.ndim != 3 or points.shape[-1] != 2:
      raise ValueError(f'panel {name!r}: points must have shape (n, P, 2), '
                       f'got {points.shape}')
    points = points[np.isfinite(points).all((1, 2))][:max_arms]
    alpha = float(np.clip(15.0 / max(len(points), 1), 0.08, 0.8))
    ax.axvline(0.0, color='0.75', lw=2, zorder=0)  # the base's rail
    for arm in points:
      ax.plot(arm[:, 0], arm[:, 1], '-', color='tab:blue', lw=1,
              alpha=alpha)
    if len(points):
      ax.scatter(points[:, 1:-1, 0].ravel(), points[:, 1:-1, 1].ravel(), s=3,
                 c='0.3', alpha=alpha, linewidths=0)
      ax.scatter(points[:, 0, 0], points[:, 0, 1], s=10, c='k', marker='s',
                 linewidths=0, label='base')
      ax.scatter(points[:, -1, 0], points[:, -1, 1], s=6, c='tab:orange',
                 linewidths=0, label='end point')
    ax.plot(*target, marker='*', ms=12, color='tab:red', ls='none',
            label='target')
    ax.set_aspect('equal')
    ax.set_title(f'{name} ({len(points)} arms)', fontsize=9)
    ax.set_xlabel('reach')
  axes[0].set_ylabel('height')
  axes[0].legend(loc='lower left', fontsize=6, markerscale=1.5)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def trajectories(panels: Mapping[str, np.ndarray], target: float,
                 *, max_curves: int = 200,
                 title: Optional[str] = None) -> Figure:
  """Flight paths, one panel per set of solutions, over the ground line.

  Args:
    panels: panel title -> (n, S, 2) points (horizontal, height) of each
      trajectory along time. Rows with a non-finite point are not drawn.
    target: horizontal landing position to reach (marked on the ground).
    max_curves: draw at most this many curves per panel (the first ones).
    title: figure title.
  """
  if not panels:
    raise ValueError('panels is empty')
  fig, axes = _panel_axes(len(panels), (4.0, 3.0))
  for ax, (name, curves) in zip(axes, panels.items()):
    curves = np.asarray(curves, float)
    if curves.ndim != 3 or curves.shape[-1] != 2:
      raise ValueError(f'panel {name!r}: curves must have shape (n, S, 2), '
                       f'got {curves.shape}')
    finite = np.isfinite(curves).all((1, 2))
    shown = curves[finite][:max_curves]
    alpha = float(np.clip(15.0 / max(len(shown), 1), 0.08, 0.8))
    ax.axhline(0.0, color='0.5', lw=1)
    for c in shown:
      ax.plot(c[:, 0], c[:, 1], color='tab:blue', lw=0.8, alpha=alpha)
    if len(shown):
      ax.scatter(shown[:, 0, 0], shown[:, 0, 1], s=6, c='k', linewidths=0,
                 label='start')
    ax.plot(float(target), 0.0, marker='v', ms=10, color='tab:red',
            ls='none', label='target')
    label = f'{name} ({len(shown)} throws'
    if not finite.all():
      label += f', {int(np.sum(~finite))} invalid'
    ax.set_title(label + ')', fontsize=9)
    ax.set_xlabel('horizontal position')
  axes[0].set_ylabel('height')
  axes[0].legend(loc='upper left', fontsize=6)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def cell_grid(rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
              *, title: Optional[str] = None) -> Figure:
  """Rows of density images (0 white, 1 black), each with a caption.

  Args:
    rows: (row label, cells (k, H, W) with values in [0, 1], k captions)
      per row; rows may hold different numbers of cells.
    title: figure title.
  """
  if not rows:
    raise ValueError('rows is empty')
  cols = max(len(cells) for _, cells, _ in rows)
  if cols == 0:
    raise ValueError('every row is empty')
  fig = Figure(figsize=(1.5 * cols, 1.7 * len(rows)), constrained_layout=True)
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for i, (label, cells, captions) in enumerate(rows):
    cells = np.asarray(cells, float)
    if cells.ndim != 3 or len(captions) != len(cells):
      raise ValueError(f'row {label!r}: need cells (k, H, W) and k captions, '
                       f'got {cells.shape} and {len(captions)}')
    for j in range(cols):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j < len(cells):
        ax.imshow(cells[j], cmap='gray_r', vmin=0.0, vmax=1.0,
                  interpolation='nearest')
        ax.set_title(captions[j], fontsize=7)
      else:
        ax.axis('off')
    axes[i, 0].set_ylabel(label, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def time_to_solution(times: Mapping[str, Mapping[str, Sequence[float]]],
                     *, title: Optional[str] = None) -> Figure:
  """Stacked bars of inference and localization time (the paper's Fig. 7).

  Args:
    times: task -> method -> (inference_s, localization_s), e.g. means over
      seeds; one panel per task, one bar per method.
    title: figure title.
  """
  if not times:
    raise ValueError('times is empty')
  fig, axes = _panel_axes(len(times), (3.2, 3.0))
  for ax, (task, per_method) in zip(axes, times.items()):
    names = list(per_method)
    pairs = np.asarray([per_method[m] for m in names], float).reshape(-1, 2)
    pos = np.arange(len(names))
    ax.bar(pos, pairs[:, 0], color='tab:orange', label='inference')
    ax.bar(pos, pairs[:, 1], bottom=pairs[:, 0], color='tab:blue',
           label='localization')
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=30, fontsize=8)
    ax.set_title(task, fontsize=9)
  axes[0].set_ylabel('time to solution [s]')
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def curves(panels: Mapping[str, Mapping[str, tuple[Sequence[float],
                                                  Sequence[float]]]],
           *, xlabel: str, ylabel: str, logx: bool = True,
           logy: bool = True, title: Optional[str] = None) -> Figure:
  """Line plots, one panel per key, one line per method (r_T, steps).

  Args:
    panels: panel title (e.g. a task) -> method -> (x values, y values).
    xlabel / ylabel: axis labels.
    logx / logy: logarithmic axes (non-positive values are not drawn).
    title: figure title.
  """
  if not panels:
    raise ValueError('panels is empty')
  fig, axes = _panel_axes(len(panels), (4.0, 3.2))
  for ax, (name, lines) in zip(axes, panels.items()):
    for method, (xs, ys) in lines.items():
      xs, ys = np.asarray(xs, float), np.asarray(ys, float)
      keep = np.isfinite(xs) & np.isfinite(ys)
      if logx:
        keep &= xs > 0
      if logy:
        keep &= ys > 0
      ax.plot(xs[keep], ys[keep], marker='o', ms=3, label=method)
    ax.set_xscale('log' if logx else 'linear')
    ax.set_yscale('log' if logy else 'linear')
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0].set_ylabel(ylabel, fontsize=8)
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def marginals(samples: Mapping[str, np.ndarray], names: Sequence[str], *,
              bins: int = 30, title: Optional[str] = None) -> Figure:
  """Per-parameter histograms of several (n_k, D) sample sets, overlaid.

  Args:
    samples: label -> (n_k, D) array (e.g. training data and solutions).
    names: D parameter names (panel titles).
    bins: histogram bins per panel (shared edges across the sets).
    title: figure title.
  """
  arrays = {k: np.asarray(v).reshape(-1, len(names)) for k, v in
            samples.items()}
  cols = min(len(names), 4)
  rows = -(-len(names) // cols)
  fig = Figure(figsize=(2.8 * cols, 2.3 * rows), constrained_layout=True)
  axes = fig.subplots(rows, cols, squeeze=False)
  for d, name in enumerate(names):
    ax = axes[d // cols, d % cols]
    values = np.concatenate([a[:, d] for a in arrays.values()])
    edges = np.histogram_bin_edges(values, bins=bins)
    for label, a in arrays.items():
      ax.hist(a[:, d], bins=edges, density=True, alpha=0.5, label=label)
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
  for d in range(len(names), rows * cols):
    axes[d // cols, d % cols].set_visible(False)
  axes[0, 0].legend(fontsize=6)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def space_filling(designs: Mapping[str, np.ndarray], *, strata: bool = True,
                  title: Optional[str] = None) -> Figure:
  """2-D designs in the unit square, one panel each (the paper's Fig. 3).

  Args:
    designs: panel title -> (n, 2) points in [0, 1]^2, e.g. `srs`, `lhs` and
      `maximin_lhs` with d = 2. Each panel's title adds the minimum pairwise
      distance of its points.
    strata: draw the n x n grid of Latin-hypercube strata.
    title: figure title.
  """
  if not designs:
    raise ValueError('designs is empty')
  fig, axes = _panel_axes(len(designs), (2.8, 2.9))
  for ax, (name, u) in zip(axes, designs.items()):
    u = np.asarray(u, float)
    if u.ndim != 2 or u.shape[1] != 2:
      raise ValueError(f'design {name!r}: points must have shape (n, 2), '
                       f'got {u.shape}')
    n = u.shape[0]
    if strata:
      for edge in np.linspace(0.0, 1.0, n + 1)[1:-1]:
        ax.axvline(edge, color='0.85', lw=0.6, zorder=0)
        ax.axhline(edge, color='0.85', lw=0.6, zorder=0)
    ax.scatter(u[:, 0], u[:, 1], s=18, c='tab:blue', linewidths=0)
    d2 = np.sum((u[:, None, :] - u[None, :, :]) ** 2, -1)
    d2[np.diag_indices(n)] = np.inf
    label = f'{name}\nmin distance {np.sqrt(d2.min()):.3f}' if n > 1 else name
    ax.set_title(label, fontsize=9)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_aspect('equal')
    ax.tick_params(labelsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def landscape_2d(fn: Callable[[np.ndarray], np.ndarray],
                 bounds: tuple[Sequence[float], Sequence[float]], *,
                 levels: Sequence[float] = (),
                 points: Optional[Mapping[str, np.ndarray]] = None,
                 marks: Optional[np.ndarray] = None,
                 names: Sequence[str] = ('x1', 'x2'),
                 resolution: int = 200,
                 title: Optional[str] = None) -> Figure:
  """A function of two variables as filled contours, with level sets and points.

  Args:
    fn: (k, 2) -> (k,) or (k, 1) values, e.g. a task's simulator.
    bounds: ((x1_lo, x2_lo), (x1_hi, x2_hi)) of the plotted box.
    levels: values whose level sets are drawn as black lines (e.g. y*).
    points: label -> (n, 2) point sets drawn on top, in order (e.g. data,
      starting points, solutions).
    marks: (k, 2) positions annotated 1..k (e.g. the modes of a solution
      set).
    names: the two axis labels.
    resolution: grid points per axis.
    title: axes title.
  """
  lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
  if lo.shape != (2,) or hi.shape != (2,) or not (lo < hi).all():
    raise ValueError(f'bounds must be ((lo1, lo2), (hi1, hi2)) with lo < hi, '
                     f'got {bounds}')
  g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                       np.linspace(lo[1], hi[1], resolution))
  values = np.asarray(fn(np.stack([g1.ravel(), g2.ravel()], -1)), float)
  values = values.reshape(g1.shape)
  fig = Figure(figsize=(4.6, 3.8), constrained_layout=True)
  ax = fig.subplots()
  filled = ax.contourf(g1, g2, values, levels=20, cmap='viridis', alpha=0.8)
  fig.colorbar(filled, ax=ax, shrink=0.9)
  if len(levels):
    ax.contour(g1, g2, values, levels=sorted(levels), colors='k',
               linewidths=0.9)
  colors = ('white', 'tab:orange', 'tab:red', 'tab:cyan', 'tab:pink')
  for i, (label, x) in enumerate((points or {}).items()):
    x = np.asarray(x, float)
    if x.ndim != 2 or x.shape[1] != 2:
      raise ValueError(f'points {label!r} must have shape (n, 2), got '
                       f'{x.shape}')
    ax.scatter(x[:, 0], x[:, 1], s=6, c=colors[i % len(colors)],
               edgecolors='k', linewidths=0.2, label=label)
  if marks is not None:
    for k, (m1, m2) in enumerate(np.asarray(marks, float).reshape(-1, 2)):
      ax.annotate(str(k + 1), (m1, m2), ha='center', va='center',
                  fontsize=9, color='k', fontweight='bold')
  ax.set_xlim(lo[0], hi[0])
  ax.set_ylim(lo[1], hi[1])
  ax.set_xlabel(names[0])
  ax.set_ylabel(names[1])
  if points:
    ax.legend(loc='upper right', fontsize=7, markerscale=2)
  if title:
    ax.set_title(title, fontsize=9)
  return fig


def property_histogram(values: Mapping[str, np.ndarray],
                       target: Optional[float] = None, *,
                       xlabel: str = 'y', bins: int = 30,
                       title: Optional[str] = None) -> Figure:
  """Overlaid histograms (densities) of a scalar property, target marked.

  Args:
    values: label -> (n,) or (n, 1) values, e.g. the training data and the
      re-simulated properties of generated designs. Non-finite values are
      left out (the legend counts them).
    target: the target y*, drawn as a vertical line (None: no line).
    xlabel: the property's name and unit.
    bins: number of bins, shared by all sets.
    title: axes title.
  """
  if not values:
    raise ValueError('values is empty')
  arrays = {}
  for label, v in values.items():
    v = np.asarray(v, float)
    if v.ndim == 2 and v.shape[1] == 1:
      v = v[:, 0]
    if v.ndim != 1:
      raise ValueError(f'values {label!r} must have shape (n,) or (n, 1), '
                       f'got {v.shape}')
    arrays[label] = v
  finite = {k: v[np.isfinite(v)] for k, v in arrays.items()}
  pooled = np.concatenate(list(finite.values()))
  if target is not None:
    pooled = np.append(pooled, float(target))
  if pooled.size == 0:
    raise ValueError('no finite values to draw')
  edges = np.histogram_bin_edges(pooled, bins=bins)
  fig = Figure(figsize=(5, 3.2), constrained_layout=True)
  ax = fig.subplots()
  for label, v in finite.items():
    dropped = arrays[label].size - v.size
    text = f'{label} ({v.size}' + (f', {dropped} invalid)' if dropped
                                   else ')')
    if v.size:
      ax.hist(v, bins=edges, density=True, alpha=0.5, label=text)
  if target is not None:
    ax.axvline(float(target), color='k', ls='--', lw=1.2,
               label=f'target {float(target):g}')
  ax.set_xlabel(xlabel)
  ax.set_ylabel('density')
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return fig


def calibration(results: Mapping[str, object], names: Sequence[str], *,
                title: Optional[str] = None) -> Figure:
  """SBC rank histograms and expected-coverage curves, one column a method.

  Args:
    results: method -> `metrics.Calibration` (or anything with `ranks`
      (T, D), `levels` (K,), `central_coverage` (K, D), `hpd_coverage` (K,)).
    names: D parameter names (legend of the rank histograms).
    title: figure title.

  Top row: rank histograms per parameter (flat for a calibrated posterior;
  U-shaped: over-confident; hump: under-confident). Bottom row: coverage
  against credibility (on the diagonal when calibrated; below it:
  over-confident).
  """
  if not results:
    raise ValueError('results is empty')
  cols = len(results)
  fig = Figure(figsize=(3.2 * cols, 5.6), constrained_layout=True)
  axes = fig.subplots(2, cols, squeeze=False)
  for c, (method, cal) in enumerate(results.items()):
    ranks = np.asarray(cal.ranks)
    top, bottom = axes[0, c], axes[1, c]
    edges = np.linspace(0, ranks.max() + 1, 11)
    for d, name in enumerate(names):
      top.hist(ranks[:, d], bins=edges, histtype='step', label=name)
    top.axhline(len(ranks) / 10, color='grey', lw=0.8, ls='--')
    top.set_title(method, fontsize=9)
    top.set_xlabel('rank of the true value', fontsize=8)
    levels = np.asarray(cal.levels)
    bottom.plot([0, 1], [0, 1], color='grey', lw=0.8, ls='--')
    bottom.plot(levels, np.asarray(cal.central_coverage).mean(-1),
                marker='o', ms=3, label='central (mean over x)')
    bottom.plot(levels, np.asarray(cal.hpd_coverage), marker='s', ms=3,
                label='highest density')
    bottom.set_xlabel('credibility level', fontsize=8)
    for ax in (top, bottom):
      ax.tick_params(labelsize=7)
  axes[0, 0].set_ylabel('targets', fontsize=8)
  axes[1, 0].set_ylabel('coverage', fontsize=8)
  axes[0, 0].legend(fontsize=6)
  axes[1, 0].legend(fontsize=6)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig
