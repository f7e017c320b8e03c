"""Tests for the sinewave, robot-arm and ballistics tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import special
from scipy import stats

from ipage_jax import tasks
from ipage_jax.tasks import ballistics
from ipage_jax.tasks import robot_arm
from ipage_jax.tasks import sinewave

import roundoff

KEY = jax.random.PRNGKey(0)
EPS32 = roundoff.EPS32
EPS64 = float(np.finfo(np.float64).eps)
TRIG_ULPS = roundoff.TRIG_ULPS
# Standard errors allowed for a sample moment (a false alarm probability
# of 6e-5 per check).
Z = 4


def _check_mean(x, mean, var):
  """Sample mean within Z standard errors sqrt(var / n) of `mean`."""
  assert abs(x.mean() - mean) <= Z * np.sqrt(var / len(x))


def _check_var(x, var, mu4):
  """Sample variance within Z standard errors sqrt((mu4 - var^2) / n) of
  `var` (mu4 the fourth central moment)."""
  assert abs(x.var() - var) <= Z * np.sqrt((mu4 - var**2) / len(x))

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
  # Compiled alone, inside another jit or batched, XLA may fuse and
  # contract (FMA) differently; each result is within its rounding budget
  # of the true value, so they differ by at most twice that. Sinewave: the
  # arguments round the same (one product), the two kernels TRIG_ULPS eps
  # each and the sum eps / 2 at |y| <= 2: 3 eps. Robot arm: the angle
  # differences round the same (no products), 3 kernels weighted by the
  # lengths (sum 2), 3 products and 3 sums at the scale |x1| + 2 <= 3:
  # 7 eps. Ballistics: float64 inside, rounded to float32 once: outputs
  # at most 1 ulp (eps |y|) apart. Scale max(1, |y|).
  ulps = dict(sinewave=6, robot_arm=14, ballistics=1)[name]
  tol = ulps * EPS32 * np.maximum(1.0, np.abs(eager))
  assert np.all(np.abs(jitted - eager) <= tol)
  assert np.all(np.abs(mapped - eager) <= tol)


# ----------------------------------------------------------------- sinewave


def test_sinewave_known_values():
  x = jnp.array([
      [1 / 6, 0.0],  # both terms at their maximum
      [0.0, 0.0],
      [-0.5, 1 / 3],  # sin = 1, cos(pi) = -1
      [1 / 18, 1 / 6],  # sin(pi / 6) = 1/2, cos(pi / 2) = 0
      [-1 / 6, 1.0],  # sin(-pi / 2) = -1, cos(3 pi) = -1
  ])
  expected = np.array([2.0, 1.0, 0.0, 0.5, -2.0])
  got = np.asarray(sinewave.simulate(x)[:, 0], np.float64)
  assert np.all(np.abs(got - expected)
                <= roundoff.sine_round_off(np.asarray(x), expected, False))


def test_sinewave_mode_centers_are_the_maxima():
  c = sinewave.MODE_CENTERS
  assert c.shape == (9, 2)
  assert len({tuple(np.round(r, 6)) for r in c}) == 9
  assert np.all(np.abs(c) <= 1.0)
  got = np.asarray(sinewave.simulate(c)[:, 0], np.float64)
  assert np.all(np.abs(got - 2.0) <= roundoff.sine_round_off(c, 2.0, False))
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
  x = np.asarray(sinewave.sample_prior(KEY, 20_000), np.float64)
  assert np.all(np.abs(x) <= 1.0)
  for j in range(2):  # U(-1, 1): var 1/3, mu4 = 2^4 / 80 = 1/5
    _check_mean(x[:, j], 0.0, 1 / 3)
    _check_var(x[:, j], 1 / 3, 1 / 5)


def test_sinewave_dataset_matches_formula():
  x, y = sinewave.make_dataset(KEY, 16)
  ref = roundoff.sine64(x)
  assert np.all(np.abs(y[:, 0] - ref) <= roundoff.sine_round_off(x, ref, True))


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


def _arm_tol(x, exact_inputs):
  """Round-off bound of the float32 arm (end point or a joint) at x.

  The angles are differences of up to three inputs: two roundings of
  eps / 2 at the scale S = |x2| + |x3| + |x4|, and eps / 2 S more when x
  was rounded to float32 (exact_inputs False). Sines and cosines (slope
  <= 1) add TRIG_ULPS eps each, weighted by the lengths (sum 2); the
  products with the lengths and the sums with x1, four roundings of eps / 2
  at the scale |x1| + 2.
  """
  x = np.abs(np.asarray(x, np.float64))
  s = x[..., 1:].sum(-1) * (1.0 if exact_inputs else 1.5)
  tol = EPS32 * (2 * (s + TRIG_ULPS) + 2 * (x[..., 0] + 2))
  return tol[..., None]


def test_robot_arm_hand_computed_poses():
  h = np.pi / 2
  x = jnp.array([
      [0.3, 0.0, 0.0, 0.0],  # straight out: reach 2 at the base height
      [-0.2, h, np.pi, 2 * np.pi],  # t = (pi/2, pi/2, pi/2): straight up
      [0.1, h, h, h],  # t = (pi/2, 0, -pi/2): up, right, down
      [-0.2, h, h, np.pi],  # t = (pi/2, 0, 0): up, right, right
  ])
  y = np.asarray(robot_arm.simulate(x))
  tol = _arm_tol(np.asarray(x), False)
  want = np.array([[2.0, 0.3], [0.0, 1.8], [0.5, -0.4], [1.5, 0.3]])
  assert np.all(np.abs(y - want) <= tol)
  p = np.asarray(robot_arm.joint_positions(x))
  assert p.shape == (4, 4, 2)
  want = np.array([[0.0, 0.1], [0.0, 0.6], [0.5, 0.6], [0.5, -0.4]])
  assert np.all(np.abs(p[2] - want) <= tol[2])
  # All angles 0: cos 0 = 1 and sin 0 = 0 exactly, sums of halves exact.
  np.testing.assert_array_equal(
      p[0], np.float32([[0.0, 0.3], [0.5, 0.3], [1.0, 0.3], [2.0, 0.3]]))


def test_robot_arm_matches_reference_and_joints():
  x = robot_arm.sample_prior(KEY, 16)
  y = np.asarray(robot_arm.simulate(x))
  ref = _arm_reference(x)
  tol = _arm_tol(np.asarray(x), True)
  assert np.all(np.abs(y - ref) <= tol)
  p = np.asarray(robot_arm.joint_positions(x), np.float64)
  # The cumulative-sum path has the same budget against the reference.
  assert np.all(np.abs(p[:, 3] - ref) <= tol)
  np.testing.assert_array_equal(p[:, 0, 0], 0.0)
  np.testing.assert_array_equal(p[:, 0, 1], np.asarray(x)[:, 0])
  # Each joint within the budget: a segment's length within twice it.
  seg = np.linalg.norm(np.diff(p, axis=1), axis=-1)
  assert np.all(np.abs(seg - np.array([0.5, 0.5, 1.0])) <= 2 * tol)


def test_robot_arm_gradients_match_finite_differences():
  x = np.array([[0.1, 0.3, -0.4, 0.7], [-0.2, -0.5, 0.2, 0.1]])
  jac = np.asarray(
      jax.vmap(jax.jacfwd(lambda r: robot_arm.simulate(r[None])[0]))(
          jnp.asarray(x, jnp.float32)
      )
  )
  assert jac.shape == (2, 2, 4)
  # Closed form in float64 at the float32 inputs: reach = sum l cos t,
  # height = x1 + sum l sin t, dt / d(x2, x3, x4) = T below.
  x32 = np.asarray(np.float32(x), np.float64)
  lengths = np.array([0.5, 0.5, 1.0])
  t = np.stack([x32[:, 1], x32[:, 2] - x32[:, 1],
                x32[:, 3] - x32[:, 1] - x32[:, 2]], -1)
  dt = np.array([[1.0, 0, 0], [-1, 1, 0], [-1, -1, 1]])
  ref = np.zeros((2, 2, 4))
  ref[:, 0, 1:] = -(lengths * np.sin(t)) @ dt
  ref[:, 1, 1:] = (lengths * np.cos(t)) @ dt
  ref[:, 1, 0] = 1.0
  # The same angle and kernel errors as the outputs (see _arm_tol), the
  # products with +-1 exact, with the lengths and the sums of <= 3 terms
  # four roundings of eps / 2 at the scale 2.
  s = np.abs(x32[:, 1:]).sum(-1)
  tol = EPS32 * (2 * (s + TRIG_ULPS) + 4)
  assert np.all(np.abs(jac - ref) <= tol[:, None, None])
  # d height / d x1 = 1, d reach / d x1 = 0 exactly.
  np.testing.assert_array_equal(jac[:, :, 0], [[0.0, 1.0], [0.0, 1.0]])


def test_robot_arm_prior_moments_and_bounds():
  n = 20_000
  x = np.asarray(robot_arm.sample_prior(KEY, n), np.float64)
  var = np.array([1 / 16, 1 / 4, 1 / 4, 1 / 4])
  for j in range(4):  # normal: mu4 = 3 var^2
    _check_mean(x[:, j], 0.0, var[j])
    _check_var(x[:, j], var[j], 3 * var[j] ** 2)
  # Independent columns: sample correlations have standard error
  # 1 / sqrt(n).
  corr = np.corrcoef(x.T)
  assert np.max(np.abs(corr - np.eye(4))) < Z / np.sqrt(n)
  # 3 x (0.25, 0.5, 0.5, 0.5) is exact in float32.
  np.testing.assert_array_equal(robot_arm.UPPER, 3 * np.sqrt(var))
  np.testing.assert_array_equal(robot_arm.LOWER, -3 * np.sqrt(var))


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
  tol = roundoff.landing_round_off(x32, ref)
  assert np.all(np.abs(np.asarray(y) - ref) <= tol)
  assert np.all(np.abs(np.asarray(ballistics.simulate(x32))[:, 0] - ref)
                <= tol)


def test_ballistics_simple_cases():
  # Zero speed from height h: falls straight down, lands at x1.
  y, valid = ballistics.landing(jnp.array([[0.7, 1.3, 0.5, 0.0]]))
  assert bool(valid[0])
  # v1 = 0: x1 + 0, exactly x1.
  np.testing.assert_array_equal(y, np.float32([0.7]))
  # Straight up from the ground (angle pi/2): comes back to x1. The float32
  # angle is off pi/2, so |y - x1| <= x4 |cos(angle)| m / k (drift during
  # the flight), plus the final rounding eps / 2 |x1|.
  y, valid = ballistics.landing(jnp.array([[-0.4, 0.0, np.pi / 2, 10.0]]))
  assert bool(valid[0])
  drift = 10.0 * abs(np.cos(np.float64(np.float32(np.pi / 2)))) * _M / _K
  np.testing.assert_allclose(y, [-0.4], rtol=0,
                             atol=drift + EPS32 / 2 * 0.4)


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
  x1 = np.asarray(x[1:2], np.float64)
  ref = _landing_reference(x1[0])
  assert abs(y[1] - ref) <= roundoff.landing_round_off(x1, ref)[0]
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
  # The float64 gradient rounded to float32 (eps / 2 |g|); the central
  # difference's truncation and rounding (roundoff.central_difference),
  # the reference's error 1e4 eps64 at the scale |x1| + x4 m / k (see
  # roundoff.landing_round_off).
  for row, g in zip(x32, grad):
    scale = abs(row[0]) + row[3] * _M / _K
    fd, bound = roundoff.central_difference(_landing_reference, row, 1e-5,
                                            1e4 * EPS64 * scale)
    assert np.all(np.abs(g - fd) <= EPS32 / 2 * np.abs(g) + bound)
  # d x_land / d x1 = 1 exactly.
  np.testing.assert_array_equal(grad[:, 0], 1.0)


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
  # Halley stops where w e^w - z is at its rounding floor (2 eps64 |z|:
  # exp and the product); through dw = dz / (e^w (1 + w)) that moves w by
  # 2 eps64 |w| / (1 + w), as large as W0's condition near the branch
  # point (dW/dz ~ 1e6 at z = -1/e + 1e-12). Code and scipy each: 4, plus
  # half an ulp of w for each one's final rounding.
  delta = EPS64 * np.abs(ref) * (4 / (1 + ref) + 1)
  assert np.all(np.abs(w - ref) <= delta)
  # w e^w against z: d log(w e^w) / dw = (1 + w) / w turns delta into
  # eps64 (5 + w) relative, plus the exp's and the product's roundings and
  # the exp's own error (3 eps64).
  assert np.all(np.abs(w * np.exp(w) - z) <= EPS64 * (8 + ref) * np.abs(z))
  # dW/dz = W / (z (1 + W)), and 1 at z = 0; away from the branch point.
  # e^-w / (1 + w) moves by (1 + 1 / (1 + w)) delta relative, the
  # reference W / (z (1 + W)) by delta / (|W| (1 + W)); exp, add, divide
  # and product 3 eps64 each.
  nz = (z != 0) & (ref > -0.999)
  r = ref[nz]
  want = r / (z[nz] * (1 + r))
  rel = (delta[nz] * (1 + 1 / (1 + r)) + delta[nz] / (np.abs(r) * (1 + r))
         + 6 * EPS64)
  assert np.all(np.abs(dw[nz] - want) <= rel * np.abs(want))
  np.testing.assert_array_equal(dw[z == 0], 1.0)
  assert np.isnan(np.asarray(ballistics.lambert_w0(jnp.array([-0.5]))))[0]


def test_ballistics_prior_moments_and_bounds():
  n = 20_000
  x = np.asarray(ballistics.sample_prior(KEY, n), np.float64)
  _check_mean(x[:, 0], 0.0, 0.25)  # N(0, 1/4): mu4 = 3 var^2
  _check_var(x[:, 0], 0.25, 3 * 0.25**2)
  assert x[:, 1].min() >= 0.0
  # max(N(3/2, 1/4), 0): moments of the normal clipped at 0 (numerically).
  clipped = stats.norm(1.5, 0.5).expect
  m1 = clipped(lambda v: np.maximum(v, 0.0))
  var2 = clipped(lambda v: (np.maximum(v, 0.0) - m1) ** 2)
  mu4 = clipped(lambda v: (np.maximum(v, 0.0) - m1) ** 4)
  _check_mean(x[:, 1], m1, var2)
  _check_var(x[:, 1], var2, mu4)
  lo, hi = np.deg2rad(9.0), np.deg2rad(81.0)
  assert lo <= x[:, 2].min() and x[:, 2].max() <= hi
  # U(lo, hi): var (hi - lo)^2 / 12, mu4 = (hi - lo)^4 / 80.
  _check_mean(x[:, 2], (lo + hi) / 2, (hi - lo) ** 2 / 12)
  _check_var(x[:, 2], (hi - lo) ** 2 / 12, (hi - lo) ** 4 / 80)
  np.testing.assert_array_equal(x[:, 3], np.round(x[:, 3]))
  assert x[:, 3].min() >= 0.0
  # Poisson(15): mean = var = 15, mu4 = 15 (1 + 3 15).
  _check_mean(x[:, 3], 15.0, 15.0)
  _check_var(x[:, 3], 15.0, 15.0 * (1 + 3 * 15.0))
  # The bounds box holds the prior mass p = P(|x1| <= 1.5) P(x2 <= 3)
  # P(2 <= x4 <= 30): the inside fraction within Z binomial standard
  # errors of it.
  p = ((1 - 2 * stats.norm.cdf(-3.0)) * stats.norm.cdf(3.0)
       * (stats.poisson.cdf(30, 15.0) - stats.poisson.cdf(1, 15.0)))
  inside = np.all(
      (x >= ballistics.LOWER[None]) & (x <= ballistics.UPPER[None]), axis=1
  )
  assert abs(inside.mean() - p) <= Z * np.sqrt(p * (1 - p) / n)


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
  x64 = x.astype(np.float64)
  ref = np.array([_landing_reference(r) for r in x64])
  assert np.all(np.abs(y[:, 0] - ref) <= roundoff.landing_round_off(x64, ref))
