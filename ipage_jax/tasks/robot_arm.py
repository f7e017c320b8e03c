"""Planar robot arm benchmark (paper eq. 18-19, axes as in the spec).

x = (x1, x2, x3, x4): start height x1 of the arm's base on a vertical rail and
three joint angles (radians). The three segments, of lengths
`LENGTHS = (0.5, 0.5, 1.0)`, point at angles

  t1 = x2,  t2 = x3 - x2,  t3 = x4 - x2 - x3

from the horizontal axis, and the end point is

  y = (sum_k l_k cos t_k, x1 + sum_k l_k sin t_k)   (horizontal reach, height).

Prior N(0, diag(1/16, 1/4, 1/4, 1/4)); bounds are +-3 prior standard
deviations; the default target (1.5, 0) is reach 1.5 at height 0.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ipage_jax.tasks import base

NAME = 'robot_arm'
X_DIM = 4
Y_DIM = 2
DATA_SIZE = 10_000
LENGTHS = (0.5, 0.5, 1.0)
PRIOR_STD = np.array([0.25, 0.5, 0.5, 0.5], np.float32)
DEFAULT_TARGET = np.array([1.5, 0.0], np.float32)
LOWER = (-3.0 * PRIOR_STD).astype(np.float32)
UPPER = (3.0 * PRIOR_STD).astype(np.float32)




def segment_angles(x: jax.Array) -> jax.Array:
  """`(..., 4)` designs -> `(..., 3)` segment angles (t1, t2, t3), radians."""
  x = base.check_designs(x, X_DIM)
  t1 = x[..., 1]
  t2 = x[..., 2] - x[..., 1]
  t3 = x[..., 3] - x[..., 1] - x[..., 2]
  return jnp.stack([t1, t2, t3], axis=-1)


def joint_positions(x: jax.Array) -> jax.Array:
  """Base, two joints and end point of the arm.

  Args:
    x: `(..., 4)` designs.

  Returns:
    `(..., 4, 2)` points (horizontal, height); point 0 is the base (0, x1) and
    point 3 equals `simulate(x)`.
  """
  return _joint_positions(base.check_designs(x, X_DIM))


@jax.jit
def _joint_positions(x: jax.Array) -> jax.Array:
  t = segment_angles(x)
  lengths = jnp.asarray(LENGTHS, x.dtype).reshape(
      (1,) * (t.ndim - 1) + (3, 1)
  )
  steps = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1) * lengths
  base_point = jnp.stack([jnp.zeros_like(x[..., 0]), x[..., 0]], axis=-1)
  points = base_point[..., None, :] + jnp.cumsum(steps, axis=-2)
  return jnp.concatenate([base_point[..., None, :], points], axis=-2)


def simulate(x: jax.Array) -> jax.Array:
  """Forward process: `(..., 4)` designs -> `(..., 2)` (reach, height)."""
  return _simulate(base.check_designs(x, X_DIM))


@jax.jit
def _simulate(x: jax.Array) -> jax.Array:
  t = segment_angles(x)
  lengths = jnp.asarray(LENGTHS, x.dtype)
  reach = jnp.cos(t) @ lengths
  height = x[..., 0] + jnp.sin(t) @ lengths
  return jnp.stack([reach, height], axis=-1)


def sample_prior(key: jax.Array, n: int) -> jax.Array:
  """`(n, 4)` float32 draws from N(0, diag(1/16, 1/4, 1/4, 1/4))."""
  return _sample_prior(key, base.check_count(n))


@functools.partial(jax.jit, static_argnums=1)
def _sample_prior(key: jax.Array, n: int) -> jax.Array:
  z = jax.random.normal(key, (n, X_DIM), jnp.float32)
  return z * jnp.asarray(PRIOR_STD)[None, :]


def make_dataset(key: jax.Array, n=None) -> tuple[np.ndarray, np.ndarray]:
  """Prior draws and end points: x `(n, 4)`, y `(n, 2)`, float32 numpy.

  `n=None` gives `DATA_SIZE` rows.
  """
  return base.simulated_dataset(sample_prior, simulate, key,
                                DATA_SIZE if n is None else n)


def task() -> base.Task:
  """The robot-arm `Task` (exact simulator, default target (1.5, 0))."""
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
      x_names=('x1 height', 'x2 angle', 'x3 angle', 'x4 angle'),
      y_names=('reach', 'height'),
  )
