"""Per-task scripts: configs, figure helpers and quick in-process runs."""

import json

import jax
import numpy as np
import pytest

from experiments import architected as architected_script
from experiments import ballistics as ballistics_script
from experiments import robot_arm as robot_arm_script
from experiments import runner
from experiments import train
from experiments.configs import architected as architected_config
from experiments.configs import ballistics as ballistics_config
from experiments.configs import robot_arm as robot_arm_config
from ipage_jax import image_flows
from ipage_jax import pipeline
from ipage_jax import plotting
from ipage_jax import tasks
from ipage_jax.tasks import ballistics
from ipage_jax.tasks import robot_arm

import roundoff

EPS64 = roundoff.EPS64


# Architecture, batch and epochs as in the paper's Table 5; the robot arm and
# ballistics train at 1e-3 -> 1e-5 and localize from 1e-2 (measured better,
# see experiments/configs/robot_arm.py).
@pytest.mark.parametrize('module,values', [
    (robot_arm_config, (6, 256, 'leaky_relu', 512, 500, 1e-3, 1e-5, 1e-2)),
    (ballistics_config, (6, 256, 'leaky_relu', 512, 500, 1e-3, 1e-5, 1e-2)),
])
def test_configs_follow_the_paper_table(module, values):
  c = module.get_config()
  assert (c.model.num_blocks, c.model.hidden, c.model.activation,
          c.train.batch_size, c.train.epochs, c.train.learning_rate,
          c.train.final_learning_rate,
          c.solve.localize_learning_rate) == values
  assert c.model.depth == 3


def test_architected_config_builds_an_image_inn_with_binary_solutions():
  """The architected config: a convolutional ImageINN over 32 x 32 x 1
  cells (y in its dense part), trained by the host loop, and solutions
  clipped and snapped to binary cells."""
  c = architected_config.get_config()
  inn = pipeline.build_inn(c, 1024, 1)
  assert isinstance(inn, image_flows.ImageINN)
  assert (inn.image_shape, inn.x_dim, inn.y_dim, inn.z_dim) == (
      (32, 32, 1), 1024, 1, 1023)
  assert c.train.loop == 'host' and c.train.objective == 'ml'
  assert c.solve.clip_to_box and c.solve.binarize and c.solve.repair


def test_trajectory_starts_with_the_throw_and_lands_on_the_target():
  x = np.asarray(ballistics.sample_prior(jax.random.PRNGKey(3), 32))
  x64 = x.astype(np.float64)
  a = ballistics.DRAG / ballistics.MASS  # k / m
  g_a = ballistics.GRAVITY / a  # g m / k
  # At t = 0: expm1(0) = 0, so x1 - 0 and x2 - 0: exact.
  start = ballistics_script.trajectory(x, np.zeros((32, 1)))[:, 0]
  np.testing.assert_array_equal(start, x64[:, :2])
  # Initial velocity (x4 cos x3, x4 sin x3) by a central difference in t
  # (roundoff.central_difference; the path is a sum of exponentials, and
  # its slope at 0 is exactly v1, v2 as computed here).
  # Each float64 value rounds a few times at the scale |x_i| plus the
  # moves |v| |t| and g m / k |t| <= (x4 + g m / k) 2 h: 4 eps64 of that.
  h = 1e-5
  f_err = 4 * EPS64 * (np.abs(x64[:, :2]) + 2 * h * (x64[:, 3:] + g_a))
  fd, bound = roundoff.central_difference(
      lambda t: ballistics_script.trajectory(x, np.full((32, 1), t[0]))[:, 0],
      np.zeros(1), h, f_err)
  v1, v2 = x64[:, 3] * np.cos(x64[:, 2]), x64[:, 3] * np.sin(x64[:, 2])
  assert np.all(np.abs(fd[..., 0] - np.stack([v1, v2], -1)) <= bound[..., 0])
  # At the landing time: at the simulator's landing point, height 0.
  t_land = ballistics_script.landing_time(x)
  assert np.all(t_land > 0)
  end = ballistics_script.trajectory(x, t_land[:, None])[:, 0]
  x_land = np.asarray(ballistics.landing(x)[0], np.float64)
  # t_land inverts T1 (log1p) and T1 undoes it (expm1), in float64: 4.5 eps
  # of |x_land - x1| from the roundings in and around them, plus 3 eps in
  # log1p's result passed on times C = |log(1 + q) (1 + q) / q|, q = -a
  # (x_land - x1) / v1 (expm1's slope), and the last one of eps / 2 |T1|:
  # budgeted 8 (1 + C) and 1 (first order).
  d = x_land - x64[:, 0]
  q = -a * d / v1
  c = np.abs(np.log1p(q) * (1 + q) / q)
  tol_x = EPS64 * (np.abs(x_land) + 8 * (1 + c) * np.abs(d))
  assert np.all(np.abs(end[:, 0] - x_land) <= tol_x)
  # Height: the float32 landing point is off by roundoff.landing_round_off,
  # so T1(t_land) is within dx + tol_x of the true one, and the height is
  # off by |T2' / T1'| times that (slopes (g m / k + v2) e^(-a t) - g m / k
  # and v1 e^(-a t)), plus the second-order dt^2 / 2 max |T2''| with
  # |T2''| <= g + a |v2| (dt budgeted twice the first-order value) and the
  # float64 evaluation of T2 (4 eps64 of its terms).
  decay = np.exp(-a * t_land)
  dx = roundoff.landing_round_off(x64, x_land) + tol_x
  slope_ratio = np.abs((g_a + v2) * decay - g_a) / np.abs(v1 * decay)
  dt = 2 * dx / np.abs(v1 * decay)
  terms = (np.abs(x64[:, 1]) + (g_a + np.abs(v2)) / a * (1 - decay)
           + g_a * t_land)
  tol_h = (slope_ratio * dx + dt ** 2 / 2 * (ballistics.GRAVITY
                                             + a * np.abs(v2))
           + 4 * EPS64 * terms)
  assert np.all(np.abs(end[:, 1]) <= tol_h)
  paths = ballistics_script.flight_paths(x, num_points=20)
  assert paths.shape == (32, 20, 2)
  # Above ground until landing: the exact heights between start and
  # landing are positive (measured >= 0.18 m), far above round-off.
  assert np.all(paths[:, 1:-1, 1] > 0)


def test_figures_draw_what_they_are_given():
  joints = np.array(robot_arm.joint_positions(
      robot_arm.sample_prior(jax.random.PRNGKey(0), 5)))
  joints[0, 2] = np.nan  # not drawn
  fig = plotting.arm_configurations({'a': joints, 'b': joints[:2]},
                                    [1.5, 0.0])
  ax_a, ax_b = fig.axes
  arms = [l for l in ax_a.lines if len(l.get_xdata()) == 4]
  assert len(arms) == 4 and len(ax_b.lines) == 3  # 2 arms + the target
  np.testing.assert_allclose(arms[0].get_xydata(), joints[1])
  with pytest.raises(ValueError, match='target'):
    plotting.arm_configurations({'a': joints}, [1.0])

  x = np.array(ballistics.sample_prior(jax.random.PRNGKey(1), 6))
  paths = ballistics_script.flight_paths(x, num_points=10)
  paths[1, 3] = np.nan
  fig = plotting.trajectories({'p': paths}, 5.0)
  curves = [l for l in fig.axes[0].lines if len(l.get_xdata()) == 10]
  assert len(curves) == 5
  assert '1 invalid' in fig.axes[0].get_title()

  cells = np.random.default_rng(0).random((3, 4, 4))
  fig = plotting.cell_grid([('gen', cells, ['a', 'b', 'c']),
                            ('data', cells[:1], ['d'])])
  assert sum(len(ax.images) for ax in fig.axes) == 4
  with pytest.raises(ValueError, match='captions'):
    plotting.cell_grid([('gen', cells, ['a'])])

  fig = plotting.time_to_solution({'t1': {'ipage': (0.1, 0.5),
                                          'na': (0.0, 2.0)}})
  heights = sorted(p.get_height() for p in fig.axes[0].patches)
  np.testing.assert_allclose(heights, [0.0, 0.1, 0.5, 2.0])



@pytest.mark.parametrize('task,script,figure,dims', [
    ('robot_arm', robot_arm_script, 'robot_arm_solutions.png', (4, 2)),
    # Same path as the robot arm; its figure code is tested above.
    pytest.param('ballistics', ballistics_script,
                 'ballistics_trajectories.png', (4, 1),
                 marks=pytest.mark.slow),
])
def test_script_quick_run(parse, task, script, figure, dims):
  workdir = parse('--quick', '--epochs=1', '--num_solutions=8')
  config, _ = runner.resolve(task)
  config.model.num_blocks = 1  # compile time: the test is about outputs
  result = train.train_and_evaluate(config, str(workdir), script.HOOKS)
  assert result['figure'] == figure
  for name in (figure, 'metrics.json', 'solutions.npz', 'model.json',
               'training_curves.png'):
    assert (workdir / name).stat().st_size > 0, name
  sols = np.load(workdir / 'solutions.npz')
  assert sols['x'].shape == (8, dims[0])
  assert sols['y_surrogate'].shape == (8, dims[1])
  with open(workdir / 'metrics.json') as f:
    metrics = json.load(f)
  assert np.isfinite(metrics['resimulation_error'])
  assert metrics['num_solutions'] == 8


@pytest.mark.slow
def test_architected_data_cache_and_quick_run(parse, tmp_path):
  workdir = parse('--quick', '--epochs=1', '--num_solutions=4')
  config, _ = runner.resolve('architected')
  config.model.num_blocks = 2
  config.data_size = 80
  path = architected_script.data_cache_path(config, str(tmp_path))
  assert path == str(tmp_path / 'architected_80.npz')
  config.data_cache = str(tmp_path / 'cells.npz')
  assert architected_script.data_cache_path(config, 'x') == \
      config.data_cache
  config.data_cache = path
  task = architected_script.with_data_cache(tasks.get('architected'), path)
  x, y = task.make_dataset(jax.random.PRNGKey(0), 80)
  # Read back from the file, whatever the key.
  x2, y2 = task.make_dataset(jax.random.PRNGKey(1), 80)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  result = train.train_and_evaluate(config, str(workdir),
                                    architected_script.HOOKS)
  assert (workdir / 'architected_cells.png').stat().st_size > 0
  assert len(result['figure_fem_y']) == 4
  assert np.all(np.isfinite(result['figure_fem_y']))
