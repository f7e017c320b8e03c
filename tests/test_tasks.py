"""Tests for the sinewave, robot-arm and ballistics tasks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import special

from ipage_jax import tasks
from ipage_jax.tasks import ballistics
from ipage_jax.tasks import robot_arm
from ipage_jax.tasks import sinewave

KEY = jax.random.PRNGKey(0)

# ----------------------------------------------------------------- registry


@pytest.mark.parametrize(
    'name, d, m, target',
    [
        ('sinewave', 2, 1, [1.2]),
        ('robot_arm', 4, 2, [1.5, 0.0]),
        ('ballistics', 4, 1, [5.0]),
    ],
)
def test_registry_fields(name, d, m, target):
  task = tasks.get(name)
  assert task.name == name
  assert (task.x_dim, task.y_dim) == (d, m)
  np.testing.assert_array_equal(
      task.default_target, np.asarray(target, np.float32)
  )
  assert task.lower.shape == task.upper.shape == (d,)
  assert np.all(task.lower < task.upper)
  assert task.data_size == 10_000
  assert task.simulator_kind == 'exact'
  assert len(task.x_names) == d and len(task.y_names) == m
  x = task.sample_prior(KEY, 16)
  assert x.shape == (16, d) and x.dtype == jnp.float32
  y = task.simulate(x)
  assert y.shape == (16, m) and y.dtype == jnp.float32


@pytest.mark.parametrize('name', ['sinewave', 'robot_arm', 'ballistics'])
def test_make_dataset_default_size_and_determinism(name):
  task = tasks.get(name)
  x, y = task.make_dataset(KEY)
  assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
  assert x.shape == (10_000, task.x_dim) and x.dtype == np.float32
  assert y.shape == (10_000, task.y_dim) and y.dtype == np.float32
  assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
  x2, _ = task.make_dataset(KEY, 16)
  x3, _ = task.make_dataset(KEY, 16)
  np.testing.assert_array_equal(x2, x3)
  x4, _ = task.make_dataset(jax.random.PRNGKey(1), 16)
  assert not np.allclose(x2, x4)


@pytest.mark.parametrize('name', ['sinewave', 'robot_arm', 'ballistics'])
def test_bad_arguments_raise(name):
  task = tasks.get(name)
  with pytest.raises(ValueError, match='n must be'):
    task.sample_prior(KEY, 0)
  with pytest.raises(ValueError, match='n must be'):
    task.make_dataset(KEY, -3)
  with pytest.raises(ValueError, match='shape'):
    task.simulate(jnp.zeros((3, task.x_dim + 1)))


@pytest.mark.parametrize('name', ['sinewave', 'robot_arm', 'ballistics'])
def test_jit_and_vmap_agree(name):
  task = tasks.get(name)
  x = task.sample_prior(KEY, 16)
  eager = np.asarray(task.simulate(x))
  jitted = np.asarray(jax.jit(task.simulate)(x))
  mapped = np.asarray(jax.vmap(lambda r: task.simulate(r[None])[0])(x))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- sinewave


def test_sinewave_known_values():
  x = jnp.array([
      [1 / 6, 0.0],  # both terms at their maximum
      [0.0, 0.0],
      [-0.5, 1 / 3],  # sin = 1, cos(pi) = -1
      [1 / 18, 1 / 6],  # sin(pi / 6) = 1/2, cos(pi / 2) = 0
      [-1 / 6, 1.0],  # sin(-pi / 2) = -1, cos(3 pi) = -1
  ])
  expected = [2.0, 1.0, 0.0, 0.5, -2.0]
  np.testing.assert_allclose(
      sinewave.simulate(x)[:, 0], expected, atol=1e-6
  )


def test_sinewave_mode_centers_are_the_maxima():
  c = sinewave.MODE_CENTERS
  assert c.shape == (9, 2)
  assert len({tuple(np.round(r, 6)) for r in c}) == 9
  assert np.all(np.abs(c) <= 1.0)
  np.testing.assert_allclose(sinewave.simulate(c)[:, 0], 2.0, atol=1e-5)
  np.testing.assert_array_equal(sinewave.mode_index(c), np.arange(9))
  # No other maximum inside the box: brute force on a fine grid.
  g = np.linspace(-1, 1, 601)
  xx, yy = np.meshgrid(g, g, indexing='ij')
  vals = np.sin(3 * np.pi * xx) + np.cos(3 * np.pi * yy)
  near_max = np.stack([xx[vals > 1.99], yy[vals > 1.99]], axis=-1)
  d = np.min(
      np.linalg.norm(near_max[:, None, :] - c[None, :, :], axis=-1), axis=1
  )
  assert np.max(d) < 0.02


def test_sinewave_mode_index_on_the_solution_curves():
  # Points on the y* = 1.2 level set, found on a grid; each must be within
  # 0.15 of the centre it is assigned to, and every mode must be hit.
  g = np.linspace(-1, 1, 801)
  xx, yy = np.meshgrid(g, g, indexing='ij')
  vals = np.sin(3 * np.pi * xx) + np.cos(3 * np.pi * yy)
  pts = np.stack([xx[np.abs(vals - 1.2) < 5e-3],
                  yy[np.abs(vals - 1.2) < 5e-3]], axis=-1)
  assert pts.shape[0] > 500
  idx = np.asarray(sinewave.mode_index(jnp.asarray(pts, jnp.float32)))
  assert idx.dtype == np.int32
  centers = sinewave.MODE_CENTERS[idx]
  dist = np.linalg.norm(pts - centers, axis=-1)
  assert np.max(dist) < 0.15
  np.testing.assert_array_equal(np.unique(idx), np.arange(9))
  # Nearest centre by brute force agrees.
  brute = np.argmin(
      np.linalg.norm(pts[:, None, :] - sinewave.MODE_CENTERS[None], axis=-1),
      axis=1,
  )
  np.testing.assert_array_equal(idx, brute)


def test_sinewave_prior_moments():
  x = np.asarray(sinewave.sample_prior(KEY, 20_000))
  assert np.all(np.abs(x) <= 1.0)
  np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)
  np.testing.assert_allclose(x.var(0), 1 / 3, atol=0.01)


def test_sinewave_dataset_matches_formula():
  x, y = sinewave.make_dataset(KEY, 16)
  ref = np.sin(3 * np.pi * x[:, 0].astype(np.float64)) + np.cos(
      3 * np.pi * x[:, 1].astype(np.float64)
  )
  np.testing.assert_allclose(y[:, 0], ref, atol=1e-5)


# ---------------------------------------------------------------- robot arm


def _arm_reference(x):
  """float64 numpy forward model written from the paper's equations."""
  x = np.asarray(x, np.float64)
  l1, l2, l3 = 0.5, 0.5, 1.0
  t1 = x[:, 1]
  t2 = x[:, 2] - x[:, 1]
  t3 = x[:, 3] - x[:, 1] - x[:, 2]
  reach = l1 * np.cos(t1) + l2 * np.cos(t2) + l3 * np.cos(t3)
  height = x[:, 0] + l1 * np.sin(t1) + l2 * np.sin(t2) + l3 * np.sin(t3)
  return np.stack([reach, height], axis=-1)


def test_robot_arm_hand_computed_poses():
  h = np.pi / 2
  x = jnp.array([
      [0.3, 0.0, 0.0, 0.0],  # straight out: reach 2 at the base height
      [-0.2, h, np.pi, 2 * np.pi],  # t = (pi/2, pi/2, pi/2): straight up
      [0.1, h, h, h],  # t = (pi/2, 0, -pi/2): up, right, down
      [-0.2, h, h, np.pi],  # t = (pi/2, 0, 0): up, right, right
  ])
  y = np.asarray(robot_arm.simulate(x))
  np.testing.assert_allclose(
      y, [[2.0, 0.3], [0.0, 1.8], [0.5, -0.4], [1.5, 0.3]], atol=1e-6
  )
  p = np.asarray(robot_arm.joint_positions(x))
  assert p.shape == (4, 4, 2)
  np.testing.assert_allclose(
      p[2], [[0.0, 0.1], [0.0, 0.6], [0.5, 0.6], [0.5, -0.4]], atol=1e-6
  )
  np.testing.assert_allclose(
      p[0], [[0.0, 0.3], [0.5, 0.3], [1.0, 0.3], [2.0, 0.3]], atol=1e-6
  )


def test_robot_arm_matches_reference_and_joints():
  x = robot_arm.sample_prior(KEY, 16)
  y = np.asarray(robot_arm.simulate(x))
  np.testing.assert_allclose(y, _arm_reference(x), atol=2e-6)
  p = np.asarray(robot_arm.joint_positions(x), np.float64)
  np.testing.assert_allclose(p[:, 3], y, atol=2e-6)
  np.testing.assert_allclose(p[:, 0, 0], 0.0)
  np.testing.assert_allclose(p[:, 0, 1], np.asarray(x)[:, 0])
  seg = np.linalg.norm(np.diff(p, axis=1), axis=-1)
  np.testing.assert_allclose(
      seg, np.broadcast_to([0.5, 0.5, 1.0], seg.shape), atol=1e-6
  )


def test_robot_arm_gradients_match_finite_differences():
  x = np.array([[0.1, 0.3, -0.4, 0.7], [-0.2, -0.5, 0.2, 0.1]])
  jac = np.asarray(
      jax.vmap(jax.jacfwd(lambda r: robot_arm.simulate(r[None])[0]))(
          jnp.asarray(x, jnp.float32)
      )
  )
  assert jac.shape == (2, 2, 4)
  eps = 1e-6
  fd = np.zeros((2, 2, 4))
  for j in range(4):
    dx = np.zeros(4)
    dx[j] = eps
    fd[:, :, j] = (
        _arm_reference(x + dx[None]) - _arm_reference(x - dx[None])
    ) / (2 * eps)
  np.testing.assert_allclose(jac, fd, atol=1e-5)
  # d height / d x1 = 1, d reach / d x1 = 0 exactly.
  np.testing.assert_allclose(jac[:, :, 0], [[0.0, 1.0], [0.0, 1.0]])


def test_robot_arm_prior_moments_and_bounds():
  x = np.asarray(robot_arm.sample_prior(KEY, 20_000), np.float64)
  var = np.array([1 / 16, 1 / 4, 1 / 4, 1 / 4])
  # Sample means within 5 standard errors of 0.
  assert np.all(np.abs(x.mean(0)) < 5 * np.sqrt(var / 20_000))
  np.testing.assert_allclose(x.var(0), var, rtol=0.05)
  corr = np.corrcoef(x.T)
  assert np.max(np.abs(corr - np.eye(4))) < 0.04
  np.testing.assert_allclose(robot_arm.UPPER, 3 * np.sqrt(var), rtol=1e-6)
  np.testing.assert_allclose(robot_arm.LOWER, -3 * np.sqrt(var), rtol=1e-6)


# --------------------------------------------------------------- ballistics

_G, _K, _M = 9.81, 0.25, 0.2


def _height(t, x2, v2):
  """Paper eq. 21, as printed."""
  return x2 - _M / _K**2 * (
      (_G * _M + v2 * _K) * (np.exp(-_K * t / _M) - 1.0) + _G * t * _K
  )


def _landing_reference(row):
  """Landing point by brentq on eq. 21 after the peak, then eq. 20."""
  x1, x2, angle, speed = (float(v) for v in row)
  v1, v2 = speed * np.cos(angle), speed * np.sin(angle)
  # Peak: dT2/dt = 0 at t = (m / k) log(1 + k v2 / (g m)); start there or at 0.
  t_peak = max(_M / _K * np.log1p(_K * v2 / (_G * _M)), 0.0)
  if _height(t_peak, x2, v2) <= 0.0:
    return np.nan
  hi = t_peak + 1.0
  while _height(hi, x2, v2) > 0.0:
    hi *= 2.0
  t = optimize.brentq(
      _height, t_peak, hi, args=(x2, v2), xtol=1e-15, rtol=1e-15
  )
  return x1 - v1 * _M / _K * (np.exp(-_K * t / _M) - 1.0)


def test_ballistics_landing_matches_brentq():
  x = np.asarray(ballistics.sample_prior(KEY, 16), np.float64)
  extra = np.array([
      [0.3, 2.0, -0.4, 6.0],  # thrown downwards from above the ground
      [-0.5, -0.5, 1.0, 12.0],  # from below the ground, peak above it
      [0.0, 0.0, 0.3, 1.0],  # from the ground, slow and flat
      [1.0, 2.5, 1.2, 29.0],  # fast and steep
  ])
  x = np.concatenate([x, extra])
  y, valid = ballistics.landing(jnp.asarray(x, jnp.float32))
  assert y.dtype == jnp.float32 and valid.dtype == jnp.bool_
  assert np.all(np.asarray(valid))
  x32 = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  ref = np.array([_landing_reference(r) for r in x32])
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(ballistics.simulate(x32))[:, 0], ref, rtol=1e-6, atol=1e-6
  )


def test_ballistics_simple_cases():
  # Zero speed from height h: falls straight down, lands at x1.
  y, valid = ballistics.landing(jnp.array([[0.7, 1.3, 0.5, 0.0]]))
  assert bool(valid[0])
  np.testing.assert_allclose(y, [0.7], atol=1e-6)
  # Straight up from the ground (angle pi/2): comes back to x1.
  y, valid = ballistics.landing(jnp.array([[-0.4, 0.0, np.pi / 2, 10.0]]))
  assert bool(valid[0])
  np.testing.assert_allclose(y, [-0.4], atol=1e-5)


def test_ballistics_invalid_throws_are_masked():
  x = jnp.array([
      [0.0, 0.0, 0.5, 0.0],  # zero speed from height 0
      [0.1, 1.0, 0.6, 9.0],  # a normal throw
      [0.0, -5.0, 0.5, 1.0],  # peak far below the ground
      [np.nan, 1.0, 1.0, 1.0],  # non-finite input
      [0.0, -1.0, -0.5, 3.0],  # thrown downwards from below the ground
      [0.0, 1.0, 0.5, np.inf],  # non-finite speed
  ])
  y, valid = ballistics.landing(x)
  np.testing.assert_array_equal(
      valid, [False, True, False, False, False, False]
  )
  y = np.asarray(y)
  assert np.all(np.isnan(y[[0, 2, 3, 4, 5]]))
  np.testing.assert_allclose(
      y[1], _landing_reference(np.asarray(x[1], np.float64)), rtol=1e-6
  )
  sim = np.asarray(ballistics.simulate(x))
  assert sim.shape == (6, 1)
  np.testing.assert_array_equal(np.isnan(sim[:, 0]), ~np.asarray(valid))
  # A valid row's gradient is finite even when batched with invalid rows.
  grads = jax.grad(lambda v: jnp.sum(ballistics.simulate(v)[1]))(x)
  assert np.all(np.isfinite(np.asarray(grads[1])))


def test_ballistics_gradients_match_finite_differences():
  x = np.array([[0.2, 1.4, 0.7, 14.0], [-0.3, 0.5, 1.1, 9.0]])
  grad = np.asarray(
      jax.jit(jax.vmap(jax.grad(lambda r: ballistics.simulate(r[None])[0, 0])))(
          jnp.asarray(x, jnp.float32)
      )
  )
  x32 = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  eps = 1e-5
  fd = np.zeros_like(x32)
  for i, j in itertools.product(range(2), range(4)):
    dx = np.zeros(4)
    dx[j] = eps
    fd[i, j] = (
        _landing_reference(x32[i] + dx) - _landing_reference(x32[i] - dx)
    ) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grad[:, 0], 1.0, atol=1e-6)


def test_ballistics_keeps_x64_local():
  y = ballistics.simulate(jnp.array([[0.0, 1.0, 0.5, 10.0]]))
  assert y.dtype == jnp.float32
  assert jnp.zeros(1).dtype == jnp.float32
  assert not jax.config.jax_enable_x64


def test_lambert_w0_matches_scipy():
  z = np.concatenate([
      -1 / np.e + np.logspace(-12, -1, 12),
      np.linspace(-0.35, 3.0, 25),
      np.logspace(0.5, 200, 10),
      [0.0],
  ])
  with jax.enable_x64(True):
    w = np.asarray(ballistics.lambert_w0(jnp.asarray(z, jnp.float64)))
    dw = np.asarray(
        jax.vmap(jax.grad(ballistics.lambert_w0))(jnp.asarray(z, jnp.float64))
    )
  ref = special.lambertw(z, 0).real
  far = ref > -0.999
  np.testing.assert_allclose(w[far], ref[far], rtol=1e-12, atol=1e-12)
  # Near the branch point W0 amplifies the rounding of z (dW/dz ~ 1e6 at
  # z = -1/e + 1e-12), so only ~1e-10 can be asked for there.
  np.testing.assert_allclose(w[~far], ref[~far], atol=1e-9)
  np.testing.assert_allclose(w * np.exp(w), z, rtol=1e-12, atol=1e-15)
  # dW/dz = W / (z (1 + W)), and 1 at z = 0; checked away from the branch
  # point, where the reference itself is ill-conditioned.
  nz = (z != 0) & (ref > -0.999)
  np.testing.assert_allclose(
      dw[nz], ref[nz] / (z[nz] * (1 + ref[nz])), rtol=1e-9
  )
  np.testing.assert_allclose(dw[z == 0], 1.0)
  assert np.isnan(np.asarray(ballistics.lambert_w0(jnp.array([-0.5]))))[0]


def test_ballistics_prior_moments_and_bounds():
  n = 20_000
  x = np.asarray(ballistics.sample_prior(KEY, n), np.float64)
  np.testing.assert_allclose(x[:, 0].mean(), 0.0, atol=0.02)
  np.testing.assert_allclose(x[:, 0].var(), 0.25, rtol=0.05)
  assert x[:, 1].min() >= 0.0
  np.testing.assert_allclose(x[:, 1].mean(), 1.5, atol=0.02)
  np.testing.assert_allclose(x[:, 1].var(), 0.25, rtol=0.05)
  lo, hi = np.deg2rad(9.0), np.deg2rad(81.0)
  assert lo <= x[:, 2].min() and x[:, 2].max() <= hi
  np.testing.assert_allclose(x[:, 2].mean(), (lo + hi) / 2, atol=0.01)
  np.testing.assert_allclose(x[:, 2].var(), (hi - lo) ** 2 / 12, rtol=0.05)
  np.testing.assert_array_equal(x[:, 3], np.round(x[:, 3]))
  assert x[:, 3].min() >= 0.0
  np.testing.assert_allclose(x[:, 3].mean(), 15.0, atol=0.15)
  np.testing.assert_allclose(x[:, 3].var(), 15.0, rtol=0.06)
  # The bounds box holds nearly all the prior mass.
  inside = np.all(
      (x >= ballistics.LOWER[None]) & (x <= ballistics.UPPER[None]), axis=1
  )
  assert inside.mean() > 0.99


def test_ballistics_dataset_redraws_invalid_rows(monkeypatch):
  calls = []
  real = ballistics.sample_prior

  def faulty_prior(key, n):
    x = real(key, n)
    if not calls:  # first round: make two throws invalid
      x = x.at[:2].set(jnp.array([0.0, 0.0, 0.5, 0.0]))
    calls.append(n)
    return x

  monkeypatch.setattr(ballistics, 'sample_prior', faulty_prior)
  x, y, num_invalid = ballistics.sample_dataset(KEY, 16)
  assert num_invalid == 2
  assert len(calls) == 2
  assert x.shape == (16, 4) and y.shape == (16, 1)
  assert np.all(np.isfinite(y))
  ref = np.array([_landing_reference(r) for r in x.astype(np.float64)])
  np.testing.assert_allclose(y[:, 0], ref, rtol=1e-6, atol=1e-6)
