"""Ballistics benchmark: landing point of a throw with linear air drag.

An object of mass m is thrown from (x1, x2) at angle x3 (radians) with speed
x4, under gravity g and a drag force -k v. With v1 = x4 cos x3,
v2 = x4 sin x3 and a = k / m, the trajectory is (paper eq. 20-21)

  T1(t) = x1 - (v1 m / k) (exp(-k t / m) - 1),
  T2(t) = x2 - (m / k^2) ((g m + v2 k) (exp(-k t / m) - 1) + g t k).

The output y is T1(t*) where t* is the time at which the trajectory comes back
down to height 0 after its peak: the largest root of T2. With u = a t,
B = 1 + a v2 / g and A = a^2 x2 / g + B, T2 = 0 reads u = A - B exp(-u), so

  u* = A + W0(-B exp(-A)),

with W0 the principal branch of the Lambert W function (the -1 branch gives
the other, earlier root). The root is computed in float64 (enabled locally,
never globally) and returned as float32; it is differentiable in x through
W0'(z) = exp(-W) / (1 + W).

A throw is *valid* when its inputs are finite, the highest point of its
trajectory continued to all t (for a downward throw it lies at t < 0) is
strictly above height 0 (z = -B exp(-A) > -1/e), and it lands at a strictly
positive time (u* > 0). Invalid throws -- e.g. zero speed from height 0, a
throw whose peak stays below the ground, non-finite input -- are reported by
`landing` through its mask and give NaN in `simulate`; `make_dataset`
redraws them (see `sample_dataset` for the count).

Prior: x1 ~ N(0, 1/4), x2 ~ N(3/2, 1/4) clipped at 0, x3 ~ U(9 deg, 81 deg),
x4 ~ Poisson(15) (integer-valued floats, drawn by inverse CDF).
Bounds (`LOWER`, `UPPER`): x1 in [-1.5, 1.5] and x2 in [0, 3] (+-3 prior
standard deviations; x2 is clipped at 0), x3 in [9, 81] degrees (the prior's
support), x4 in [2, 30] (P(x4 < 2) ~ 5e-6, P(x4 > 30) ~ 2e-4). Default
target y* = 5.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from ipage_jax.tasks import base

NAME = 'ballistics'
X_DIM = 4
Y_DIM = 1
DATA_SIZE = 10_000
GRAVITY = 9.81
DRAG = 0.25
MASS = 0.2
SPEED_RATE = 15.0
ANGLE_MIN = float(np.deg2rad(9.0))
ANGLE_MAX = float(np.deg2rad(81.0))
DEFAULT_TARGET = np.array([5.0], np.float32)
LOWER = np.array([-1.5, 0.0, ANGLE_MIN, 2.0], np.float32)
UPPER = np.array([1.5, 3.0, ANGLE_MAX, 30.0], np.float32)

_HALLEY_STEPS = 12
# Rounds of redrawing invalid rows before `sample_dataset` gives up.
_MAX_ROUNDS = 16
# Poisson CDF entries: P(x4 >= 64) ~ 1e-19.
_POISSON_TABLE_SIZE = 64




def _w0_solve(z: jax.Array, q: jax.Array) -> jax.Array:
  """Principal Lambert W of z, given q = 1 + e z (>= 0); NaN where q < 0."""
  dtype = z.dtype
  # Near the branch point z = -1/e: series in p = sqrt(2 (1 + e z)).
  p = jnp.sqrt(jnp.maximum(2.0 * q, 0.0))
  w_branch = -1.0 + p - p * p / 3.0 + (11.0 / 72.0) * p * p * p
  # Moderate z: log1p is within a factor ~1.4 of W0 on [-0.25, e].
  w_mid = jnp.log1p(jnp.maximum(z, -0.25))
  # Large z: first asymptotic terms log z - log log z + ...
  l1 = jnp.log(jnp.maximum(z, np.e))
  l2 = jnp.log(l1)
  w_large = l1 - l2 + l2 / l1
  w = jnp.where(z < -0.25, w_branch, jnp.where(z > np.e, w_large, w_mid))

  def halley(_, w):
    ew = jnp.exp(w)
    f = w * ew - z
    wp1 = w + 1.0
    safe_wp1 = jnp.where(jnp.abs(wp1) > 1e-12, wp1, 1e-12)
    denom = ew * wp1 - (w + 2.0) * f / (2.0 * safe_wp1)
    safe_denom = jnp.where(denom != 0.0, denom, 1.0)
    step = jnp.where(denom != 0.0, f / safe_denom, 0.0)
    return jnp.clip(w - step, -1.0, None)

  w = jax.lax.fori_loop(0, _HALLEY_STEPS, halley, w.astype(dtype))
  return jnp.where(q >= 0.0, w, jnp.nan)


def _x64_if(dtype):
  """An x64 context when `dtype` is float64 (else a no-op)."""
  if dtype == jnp.float64:
    return jax.enable_x64(True)
  return contextlib.nullcontext()


@jax.custom_jvp
def _lambert_w0_q(z: jax.Array, q: jax.Array) -> jax.Array:
  return _w0_solve(z, q)


@_lambert_w0_q.defjvp
def _lambert_w0_q_jvp(primals, tangents):
  z, q = primals
  dz, _ = tangents
  # The rule may be traced after the caller's x64 context has closed.
  with _x64_if(z.dtype):
    w = _w0_solve(z, q)
    # z = w exp(w)  =>  dw / dz = exp(-w) / (1 + w).
    return w, dz * jnp.exp(-w) / (1.0 + w)


def lambert_w0(z: jax.Array) -> jax.Array:
  """Principal branch W0 of the Lambert W function, elementwise.

  Solves w exp(w) = z with w >= -1 by Halley iterations from a branch-point
  series / log1p / asymptotic start. Use float64 input for full accuracy.

  Args:
    z: array, values >= -1/e (smaller values give NaN).

  Returns:
    W0(z), same shape and dtype; differentiable (dW/dz = e^-W / (1 + W)).
  """
  z = jnp.asarray(z)
  if not jnp.issubdtype(z.dtype, jnp.floating):
    z = z.astype(jnp.float32)
  return _lambert_w0(z)


@jax.jit
def _lambert_w0(z: jax.Array) -> jax.Array:
  return _lambert_w0_q(z, 1.0 + np.e * z)


def _landing64(x: jax.Array) -> jax.Array:
  """One float64 throw `(4,)` -> landing point (scalar), NaN if invalid."""
  a = DRAG / MASS
  x1, x2, angle, speed = x[0], x[1], x[2], x[3]
  v1 = speed * jnp.cos(angle)
  v2 = speed * jnp.sin(angle)
  b = 1.0 + a * v2 / GRAVITY
  big_a = a * a * x2 / GRAVITY + b
  z = -b * jnp.exp(-big_a)
  # 1 + e z, written so that it is exactly 0 for zero speed from height 0.
  q = 1.0 - b * jnp.exp(1.0 - big_a)
  ok_root = jnp.all(jnp.isfinite(x)) & (q > 0.0)
  # Feed a harmless value where there is no root, so that no NaN reaches
  # the derivative of W0.
  z_safe = jnp.where(ok_root, z, 0.0)
  q_safe = jnp.where(ok_root, q, 1.0)
  u = big_a + _lambert_w0_q(z_safe, q_safe)
  valid = ok_root & (u > 0.0)
  x_land = x1 + (v1 / a) * (-jnp.expm1(-u))
  return jnp.where(valid, x_land, jnp.nan)


_landing64_batched = jnp.vectorize(_landing64, signature='(d)->()')
_landing64_value_and_grad = jnp.vectorize(
    jax.value_and_grad(_landing64), signature='(d)->(),(d)'
)


def _finite_or_nan(y: jax.Array) -> jax.Array:
  return jnp.where(jnp.isfinite(y), y, jnp.nan)


@jax.custom_jvp
def _landing_point(x: jax.Array) -> jax.Array:
  """float32 `(..., 4)` -> float32 `(...,)`, computed in float64."""
  with jax.enable_x64(True):
    y = _landing64_batched(x.astype(jnp.float64)).astype(jnp.float32)
  return _finite_or_nan(y)


@_landing_point.defjvp
def _landing_point_jvp(primals, tangents):
  # float64 stays inside the primal computation: the tangent map is a
  # float32 product with the float64 gradient, so every transformation of it
  # (transpose, batching) runs without x64.
  (x,), (dx,) = primals, tangents
  with jax.enable_x64(True):
    y, g = _landing64_value_and_grad(x.astype(jnp.float64))
    y = y.astype(jnp.float32)
    g = g.astype(jnp.float32)
  return _finite_or_nan(y), jnp.sum(g * dx, axis=-1)


@jax.jit
def _landing32(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  x_land = _landing_point(x.astype(jnp.float32))
  return x_land, jnp.isfinite(x_land)


def landing(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Landing point of each throw and whether the throw is valid.

  Args:
    x: `(..., 4)` throws (x1, x2 [m], angle [rad], speed [m/s]).

  Returns:
    x_land: `(...,)` float32 horizontal landing position [m], NaN where
      invalid; differentiable in x.
    valid: `(...,)` bool mask (see the module docstring; a landing point
      that overflows float32 also counts as invalid).
  """
  return _landing32(base.check_designs(x, X_DIM))


def simulate(x: jax.Array) -> jax.Array:
  """Forward process: `(..., 4)` throws -> `(..., 1)` float32 landing points.

  Invalid throws give NaN (see `landing` for the mask).
  """
  return landing(x)[0][..., None]


def _poisson_inverse_cdf(u: jax.Array) -> jax.Array:
  """Poisson(`SPEED_RATE`) draws (float32) from uniforms u in [0, 1).

  Inverse-CDF lookup in a float64 table; only the tail beyond the float32
  resolution of u (mass < 1e-7) is cut off.
  """
  k = np.arange(_POISSON_TABLE_SIZE)
  log_pmf = (
      k * np.log(SPEED_RATE) - SPEED_RATE - special.gammaln(k + 1.0)
  )
  cdf = jnp.asarray(np.cumsum(np.exp(log_pmf)), jnp.float32)
  return jnp.searchsorted(cdf, u, side='right').astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=1)
def _sample_prior(key: jax.Array, n: int) -> jax.Array:
  k1, k2, k3, k4 = jax.random.split(key, 4)
  x1 = 0.5 * jax.random.normal(k1, (n,), jnp.float32)
  x2 = jnp.maximum(1.5 + 0.5 * jax.random.normal(k2, (n,), jnp.float32), 0.0)
  x3 = jax.random.uniform(
      k3, (n,), jnp.float32, minval=ANGLE_MIN, maxval=ANGLE_MAX
  )
  x4 = _poisson_inverse_cdf(jax.random.uniform(k4, (n,), jnp.float32))
  return jnp.stack([x1, x2, x3, x4], axis=-1)


def sample_prior(key: jax.Array, n: int) -> jax.Array:
  """`(n, 4)` float32 draws from the prior (see the module docstring)."""
  return _sample_prior(key, base.check_count(n))


def sample_dataset(
    key: jax.Array, n: int
) -> tuple[np.ndarray, np.ndarray, int]:
  """Like `make_dataset`, also returning the number of redrawn rows.

  Prior draws whose throw is invalid are replaced by fresh draws (rounds keyed
  by `fold_in(key, round)`) until n valid rows exist.

  Returns:
    x `(n, 4)`, y `(n, 1)` float32 numpy, and the number of invalid draws
    that were discarded.

  Raises:
    RuntimeError: if `_MAX_ROUNDS` rounds do not give n valid rows.
  """
  n = base.check_count(n)
  xs, ys = [], []
  have = 0
  num_invalid = 0
  for round_index in range(_MAX_ROUNDS):
    x = sample_prior(jax.random.fold_in(key, round_index), n)
    y, valid = landing(x)
    valid = np.asarray(valid)
    num_invalid += int(np.sum(~valid))
    take = np.flatnonzero(valid)[: n - have]
    xs.append(np.asarray(x, np.float32)[take])
    ys.append(np.asarray(y, np.float32)[take, None])
    have += take.size
    if have == n:
      return np.concatenate(xs), np.concatenate(ys), num_invalid
  raise RuntimeError(
      f'only {have} of {n} valid throws after {_MAX_ROUNDS} rounds'
  )


def make_dataset(key: jax.Array, n=None) -> tuple[np.ndarray, np.ndarray]:
  """Valid prior throws and landing points: x `(n, 4)`, y `(n, 1)`.

  float32 numpy; `n=None` gives `DATA_SIZE` rows. Invalid throws (almost
  never drawn from the prior) are redrawn, not kept: `sample_dataset` reports
  how many.
  """
  n = DATA_SIZE if n is None else base.check_count(n)
  x, y, _ = sample_dataset(key, n)
  return x, y


def task() -> base.Task:
  """The ballistics `Task` (exact simulator, default target 5)."""
  return base.Task(
      name=NAME,
      x_dim=X_DIM,
      y_dim=Y_DIM,
      lower=LOWER.copy(),
      upper=UPPER.copy(),
      default_target=DEFAULT_TARGET.copy(),
      sample_prior=sample_prior,
      make_dataset=make_dataset,
      data_size=DATA_SIZE,
      simulate=simulate,
      simulator_kind='exact',
      x_names=('x1 start', 'x2 height', 'x3 angle', 'x4 speed'),
      y_names=('landing',),
  )
