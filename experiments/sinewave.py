r"""Sinewave demo: y = sin(3 pi x1) + cos(3 pi x2), target y* = 1.2.

  python -m experiments.sinewave --workdir runs/sinewave
  python -m experiments.sinewave --workdir runs/sw --quick --method na

Besides the shared runner's outputs (see `--help` for the flags and the
config fields behind them) it reports the mode coverage of the solutions and
of the posterior samples (the paper's Fig. 4 / 5: solution curves with a
solution within |Omega(x) - y*| < 0.05) and draws the paper's Fig. 4/5
layout: localized solutions and raw posterior samples for Ns in
{25, 50, 100, 200} and each latent sampler (`sinewave_samplers.png`), plus
the training curves.
"""

import os

from absl import app
from absl import logging
import jax
import numpy as np

from experiments import runner
from experiments import train
from ipage_jax import evaluation
from ipage_jax import plotting
from ipage_jax.tasks import sinewave

SIZES = (25, 50, 100, 200)
SAMPLERS = ('srs', 'lhs', 'maximin_lhs')


def report(run, model, sols, key) -> dict:
  """Mode coverage of the sampler x Ns grid (first target) + the figure."""
  target = float(np.asarray(sols.y_target).reshape(-1)[0])
  grid, panels = {}, {}
  for i, sampler in enumerate(SAMPLERS):
    for n in SIZES:
      s = run.method.solve(model, jax.random.fold_in(key, i), [target], n,
                           sampler)
      cov = evaluation.mode_coverage(run.task, s,
                                     posterior=run.method.draws_posterior)
      q = evaluation.resimulation(run.task, s.x, s.y_target)[
          'resimulation_error']
      grid[f'{sampler}/{n}'] = dict(cov, resimulation_error=q)
      panels[(sampler, f'Ns = {n}')] = {
          'x': s.x, 'x_posterior': s.x_posterior,
          'label': f'{cov["modes_covered"]}/9 modes, Q={q:.1e}'}
      logging.info('%-11s Ns=%3d: %d/9 modes, smallest share %.3f, Q=%.2e',
                   sampler, n, cov['modes_covered'],
                   cov['smallest_mode_share'], q)
  fig = plotting.solution_grid_2d(
      panels, SAMPLERS, [f'Ns = {n}' for n in SIZES],
      lambda g: np.asarray(sinewave.simulate(g))[:, 0], target,
      (sinewave.LOWER, sinewave.UPPER),
      title=f'{run.method.name}: solutions for y* = {target:g}')
  fig.savefig(os.path.join(run.workdir, 'sinewave_samplers.png'), dpi=110)
  return {'sampler_grid': grid}


HOOKS = train.Hooks(report=report)

if __name__ == '__main__':
  app.run(runner.make_main('sinewave', HOOKS))
