r"""Robot arm benchmark: reach a target end point with a planar 3-link arm.

  python -m experiments.robot_arm --workdir runs/robot_arm
  python -m experiments.robot_arm --workdir runs/robot_arm --target 1.2,0.5

Besides the shared runner's outputs (see `--help` for the flags and the
config fields behind them) it draws the solutions as arm
configurations reaching the target (`robot_arm_solutions.png`: posterior
samples before localization next to the localized solutions) and the
training curves (`training_curves.png`). With a target file the figure shows
the first target.
"""

import os

from absl import app
import numpy as np

from experiments import runner
from experiments import train
from ipage_jax import plotting
from ipage_jax.tasks import robot_arm

FIGURE = 'robot_arm_solutions.png'


def first_target(sols):
  """(x (N, D), x_posterior (N, D), y* (M,)) of the first target."""
  if sols.x.ndim == 3:
    return sols.x[0], sols.x_posterior[0], np.asarray(sols.y_target)[0]
  return sols.x, sols.x_posterior, np.asarray(sols.y_target)


def report(run, model, sols, key) -> dict:
  """Draws the arms of the solutions (first target) and training curves."""
  del key  # deterministic figures
  x, x_post, target = first_target(sols)
  panels = {}
  if not np.array_equal(x, x_post):  # methods without localization
    panels['posterior samples'] = robot_arm.joint_positions(x_post)
  panels['solutions'] = robot_arm.joint_positions(x)
  fig = plotting.arm_configurations(
      panels, target, title=f'{run.method.name}: arms for y* = '
      f'({target[0]:g}, {target[1]:g})')
  fig.savefig(os.path.join(run.workdir, FIGURE), dpi=110)
  return {'figure': FIGURE}


HOOKS = train.Hooks(report=report)

if __name__ == '__main__':
  app.run(runner.make_main('robot_arm', HOOKS))
