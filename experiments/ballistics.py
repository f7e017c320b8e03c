r"""Ballistics benchmark: throws that land at a target position.

  python -m experiments.ballistics --workdir runs/ballistics
  python -m experiments.ballistics --workdir runs/ballistics --target 7

Besides the shared runner's outputs (see `--help` for the flags and the
config fields behind them) it draws the trajectories of the
solutions landing at the target (`ballistics_trajectories.png`: posterior
samples before localization next to the localized solutions; the paper's
eq. 20-21 from the start to the landing point) and the training curves
(`training_curves.png`). With a target file the figure shows the first
target.
"""

import os

from absl import app
import numpy as np

from experiments import runner
from experiments import train
from experiments.robot_arm import first_target
from ipage_jax import plotting
from ipage_jax.tasks import ballistics

FIGURE = 'ballistics_trajectories.png'
_RATE = ballistics.DRAG / ballistics.MASS   # k / m [1/s]


def trajectory(x, t) -> np.ndarray:
  """Position of each throw at the given times (paper eq. 20-21).

  Args:
    x: (..., 4) throws (x1, x2 [m], angle [rad], speed [m/s]).
    t: (..., S) times [s], broadcast against x's leading shape.

  Returns:
    (..., S, 2) float64 points (horizontal, height).
  """
  x = np.asarray(x, np.float64)
  t = np.asarray(t, np.float64)
  if x.shape[-1:] != (4,):
    raise ValueError(f'x must have shape (..., 4), got {x.shape}')
  x1, x2, angle, speed = (x[..., i, None] for i in range(4))
  v1, v2 = speed * np.cos(angle), speed * np.sin(angle)
  k, m, g = ballistics.DRAG, ballistics.MASS, ballistics.GRAVITY
  decay = np.expm1(-k * t / m)    # exp(-k t / m) - 1
  t1 = x1 - v1 * m / k * decay
  t2 = x2 - m / k**2 * ((g * m + v2 * k) * decay + g * t * k)
  return np.stack(np.broadcast_arrays(t1, t2), axis=-1)


def landing_time(x) -> np.ndarray:
  """(...,) time [s] at which each throw lands; NaN for invalid throws.

  Inverts T1(t*) = landing point: exp(-k t* / m) = 1 - (k / m)
  (x_land - x1) / v1.
  """
  x = np.asarray(x, np.float64)
  x_land = np.asarray(ballistics.landing(x.astype(np.float32))[0],
                      np.float64)
  v1 = x[..., 3] * np.cos(x[..., 2])
  with np.errstate(divide='ignore', invalid='ignore'):
    return -np.log1p(-_RATE * (x_land - x[..., 0]) / v1) / _RATE


def flight_paths(x, num_points: int = 60) -> np.ndarray:
  """(n, num_points, 2) trajectories of (n, 4) throws, start to landing."""
  t = landing_time(x)[:, None] * np.linspace(0.0, 1.0, num_points)
  return trajectory(x, t)


def report(run, model, sols, key) -> dict:
  """Draws the flight paths of the solutions (first target) + curves."""
  del key  # deterministic figures
  x, x_post, target = first_target(sols)
  panels = {}
  if not np.array_equal(x, x_post):  # methods without localization
    panels['posterior samples'] = flight_paths(x_post)
  panels['solutions'] = flight_paths(x)
  fig = plotting.trajectories(
      panels, float(target[0]),
      title=f'{run.method.name}: throws for y* = {target[0]:g}')
  fig.savefig(os.path.join(run.workdir, FIGURE), dpi=110)
  return {'figure': FIGURE}


HOOKS = train.Hooks(report=report)

if __name__ == '__main__':
  app.run(runner.make_main('ballistics', HOOKS))
