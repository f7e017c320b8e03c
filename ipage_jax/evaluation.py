"""Evaluation of solutions against a task's simulator, in one place.

  record = evaluation.evaluate_solutions(task, sols, posterior=True)
  record['resimulation_error']             # Q of the returned designs
  record['posterior_resimulation_error']   # Q of the samples before
                                           # localization

Protocol A (the paper's Table 2) is `evaluate_solutions` of one solution
for each of T held-out targets, protocol B (Table 3) of N solutions for one
target; `r_t` is the best-of-T curve (Ren et al. 2020) and `mode_coverage`
counts the solution branches reached (sinewave: 9 curves). Records are
dicts of JSON-able numbers with the same keys wherever they are written
(`metrics.json` of a run, the benchmark's `results.json`). Timing is the
caller's (see `metrics.TimeToSolution`).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ipage_jax import metrics
from ipage_jax import solving
from ipage_jax.tasks import base

# Largest T of the r_T curve's sizes below the number of proposals.
R_T_SIZES = (1, 2, 5, 10, 20, 50, 100, 200)
DIVERSITY_ROWS = 2000   # diversity over at most this many solutions
MODE_TOL = 0.05         # |Omega(x) - y*| below which a solution counts


def _flat(task: base.Task, sols: solving.Solutions
          ) -> tuple[np.ndarray, np.ndarray]:
  """(n, D) designs and their (n, M) targets from (..., N, D) solutions."""
  x = np.asarray(sols.x).reshape(-1, task.x_dim)
  targets = np.broadcast_to(
      np.asarray(sols.y_target)[..., None, :],
      sols.x.shape[:-1] + (task.y_dim,)).reshape(-1, task.y_dim)
  return x, targets


def resimulation(task: base.Task, x, targets) -> dict:
  """Re-simulation error ||Omega(x) - y*||^2 of (n, D) designs.

  Args:
    task: the task (with a simulator).
    x: (n, D) designs, original units.
    targets: (M,) one target or (n, M) one per row.

  Returns:
    {'resimulation_error' (mean over the valid rows), '..._std',
     '..._median', 'num_invalid' (rows the simulator gives NaN / inf for),
     'simulator' ('exact' or 'oracle')}.
  """
  err = metrics.resimulation_error(task.simulate, x, targets)
  per = np.asarray(err.per_sample)
  finite = per[np.isfinite(per)]
  nan = float('nan')
  return {'resimulation_error': float(err.mean),
          'resimulation_error_std': float(np.std(finite)) if finite.size
                                    else nan,
          'resimulation_error_median': float(np.median(finite))
                                       if finite.size else nan,
          'num_invalid': int(err.num_invalid),
          'simulator': task.simulator_kind}


def evaluate_solutions(task: base.Task, sols: solving.Solutions, *,
                       posterior: bool) -> dict:
  """Everything measured of one set of solutions.

  Args:
    task: the task (with a simulator).
    sols: (..., N, D) solutions of (..., M) targets.
    posterior: `sols.x_posterior` are samples of a learned posterior (iPage,
      INN, MDN, cINN, cVAE); then their re-simulation error is reported too
      (for a method that does not localize it equals the final one).

  Returns:
    `resimulation` of the solutions plus 'num_solutions' (N per target),
    'surrogate_error' (mean), 'gradient_steps_per_solution', 'diversity'
    (mean pairwise distance of the first DIVERSITY_ROWS; NaN for N = 1) and,
    with `posterior`, 'posterior_resimulation_error' and its median; for a
    task with `design_stats`, 'design': those of the solutions.
  """
  x, targets = _flat(task, sols)
  num_solutions = int(sols.x.shape[-2])
  record = resimulation(task, x, targets)
  if posterior:
    before = resimulation(
        task, np.asarray(sols.x_posterior).reshape(x.shape), targets)
    record['posterior_resimulation_error'] = before['resimulation_error']
    record['posterior_resimulation_error_median'] = before[
        'resimulation_error_median']
  record.update(
      num_solutions=num_solutions,
      surrogate_error=float(np.mean(sols.surrogate_error)),
      gradient_steps_per_solution=float(sols.gradient_steps_per_solution),
      diversity=float(metrics.diversity(jnp.asarray(x[:DIVERSITY_ROWS])))
      if num_solutions > 1 else float('nan'))
  if task.design_stats is not None:
    record['design'] = task.design_stats(x)
  return record


def mode_coverage(task: base.Task, sols: solving.Solutions, *,
                  posterior: bool, tol: float = MODE_TOL) -> dict:
  """Modes (`task.mode_index`) with a solution within `tol` of the target.

  Args:
    task: a task with `mode_index` (the sinewave).
    sols: (N, D) solutions of one (M,) target.
    posterior: also count the modes of `sols.x_posterior`.
    tol: |Omega(x) - y*| (largest component) below which a design counts.

  Returns:
    {'num_solutions', 'modes_covered', 'smallest_mode_share'} (see
    `metrics.mode_coverage`) and, with `posterior`,
    'posterior_modes_covered'; {} for a task without modes.
  """
  if task.mode_index is None:
    return {}
  target = np.asarray(sols.y_target)
  if target.ndim != 1:
    raise ValueError(f'mode coverage needs one target of shape (M,), got '
                     f'{target.shape}')

  def covered(x):
    err = np.abs(np.asarray(task.simulate(x)) - target[None])
    return metrics.mode_coverage(task.mode_index(x), err, task.num_modes,
                                 tol)

  cov = covered(np.asarray(sols.x))
  record = {'num_solutions': int(sols.x.shape[0]),
            'modes_covered': int(cov.num_covered),
            'smallest_mode_share': float(cov.smallest_share)}
  if posterior:
    record['posterior_modes_covered'] = int(
        covered(np.asarray(sols.x_posterior)).num_covered)
  return record


def r_t(task: base.Task, sols: solving.Solutions,
        sizes: Sequence[int] = R_T_SIZES) -> dict:
  """The r_T curve (Ren et al. 2020) of (R, T_max, D) solutions.

  r_T is the mean over the R targets of the smallest re-simulation error
  among the first T proposals. A method that localizes through a surrogate
  (gradient steps > 0) proposes its candidates best-first by the
  surrogate's error, as NA keeps its best T of many starts; the others
  (plain samplers) in the order drawn.

  Returns:
    {'t': [T...] (the `sizes` below T_max, and T_max), 'r_t': [r_T...],
     'last': r_T at T = T_max}.
  """
  num_targets, t_max = sols.x.shape[:2]
  x, targets = _flat(task, sols)
  err = metrics.resimulation_error(task.simulate, x, targets)
  err = np.asarray(err.per_sample).reshape(num_targets, t_max)
  if sols.gradient_steps_per_solution > 0:
    order = np.argsort(np.asarray(sols.surrogate_error), axis=1)
    err = np.take_along_axis(err, order, axis=1)
  ts = [t for t in sizes if t < t_max] + [t_max]
  values = np.asarray(metrics.r_t_curve(jnp.asarray(err), ts))
  return {'t': ts, 'r_t': values.tolist(), 'last': float(values[-1])}


__all__ = ('DIVERSITY_ROWS', 'MODE_TOL', 'R_T_SIZES', 'evaluate_solutions',
           'mode_coverage', 'r_t', 'resimulation')
