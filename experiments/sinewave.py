r"""Sinewave demo: y = sin(3 pi x1) + cos(3 pi x2), target y* = 1.2.

  python -m experiments.sinewave --workdir runs/sinewave

Besides the shared runner's outputs it reports mode coverage (SPEC section
5) and draws the paper's Fig. 4/5 layout: localized solutions and raw
posterior samples for Ns in {25, 50, 100, 200} and each latent sampler
(`sinewave_samplers.png`), plus the training curves.
"""

import os

from absl import app
from absl import logging
import jax
import numpy as np

from experiments import runner
from ipage_jax import metrics
from ipage_jax import plotting
from ipage_jax.tasks import sinewave

SIZES = (25, 50, 100, 200)
SAMPLERS = ('srs', 'lhs', 'maximin_lhs')
TOL = 0.05


def coverage(x: np.ndarray, target: float) -> dict:
  """Mode coverage of (n, 2) solutions at |Omega(x) - y*| < TOL."""
  err = np.abs(np.asarray(sinewave.simulate(x))[:, 0] - target)
  cov = metrics.mode_coverage(sinewave.mode_index(x), err,
                              sinewave.NUM_MODES, TOL)
  return {'modes_covered': int(cov.num_covered),
          'smallest_mode_share': float(cov.smallest_share)}


def report(run, model, sols, key) -> dict:
  """Mode coverage of the main run and of the sampler x Ns grid + figures."""
  target = float(np.asarray(sols.y_target).reshape(-1)[0])
  out = {}
  if sols.x.ndim == 2:
    out.update(coverage(sols.x, target))
  grid, panels = {}, {}
  for i, sampler in enumerate(SAMPLERS):
    for n in SIZES:
      s = run.method.solve(model, jax.random.fold_in(key, i), [target], n,
                           sampler, solve_config=run.config.solve)
      cov = coverage(s.x, target)
      q = float(np.mean((np.asarray(sinewave.simulate(s.x))[:, 0]
                         - target) ** 2))
      grid[f'{sampler}/{n}'] = dict(cov, resimulation_error=q)
      panels[(sampler, f'Ns = {n}')] = {
          'x': s.x, 'x_posterior': s.x_posterior,
          'label': f'{cov["modes_covered"]}/9 modes, Q={q:.1e}'}
      logging.info('%-11s Ns=%3d: %d/9 modes, smallest share %.3f, Q=%.2e',
                   sampler, n, cov['modes_covered'],
                   cov['smallest_mode_share'], q)
  out['sampler_grid'] = grid
  fig = plotting.solution_grid_2d(
      panels, SAMPLERS, [f'Ns = {n}' for n in SIZES],
      lambda g: np.asarray(sinewave.simulate(g))[:, 0], target,
      (sinewave.LOWER, sinewave.UPPER),
      title=f'{run.method.name}: solutions for y* = {target:g}')
  fig.savefig(os.path.join(run.workdir, 'sinewave_samplers.png'), dpi=110)
  return out


if __name__ == '__main__':
  app.run(runner.make_main('sinewave', report=report))
