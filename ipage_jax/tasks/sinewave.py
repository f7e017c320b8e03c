"""Sinewave benchmark: y = sin(3 pi x1) + cos(3 pi x2) on [-1, 1]^2.

For the default target y* = 1.2 the solution set is nine closed curves, one
around each maximum of y (`MODE_CENTERS`); every curve lies within distance
0.15 of its maximum while the maxima are 2/3 apart, so the nearest maximum
(`mode_index`) identifies the mode of a solution.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ipage_jax.tasks import base

NAME = 'sinewave'
X_DIM = 2
Y_DIM = 1
DATA_SIZE = 10_000
DEFAULT_TARGET = np.array([1.2], np.float32)
LOWER = np.array([-1.0, -1.0], np.float32)
UPPER = np.array([1.0, 1.0], np.float32)

# Maxima of y inside the box: sin(3 pi x1) = 1 at x1 = 1/6 + 2k/3 and
# cos(3 pi x2) = 1 at x2 = 2k/3. Row r = 3 i + j for x1 index i, x2 index j.
_X1_MAX = np.array([-1.0 / 2.0, 1.0 / 6.0, 5.0 / 6.0])
_X2_MAX = np.array([-2.0 / 3.0, 0.0, 2.0 / 3.0])
MODE_CENTERS = np.stack(
    np.meshgrid(_X1_MAX, _X2_MAX, indexing='ij'), axis=-1
).reshape(9, 2).astype(np.float32)
NUM_MODES = 9




def simulate(x: jax.Array) -> jax.Array:
  """Forward process.

  Args:
    x: `(..., 2)` designs (x1, x2).

  Returns:
    `(..., 1)` values sin(3 pi x1) + cos(3 pi x2).
  """
  return _simulate(base.check_designs(x, X_DIM))


@jax.jit
def _simulate(x: jax.Array) -> jax.Array:
  y = jnp.sin(3.0 * jnp.pi * x[..., 0]) + jnp.cos(3.0 * jnp.pi * x[..., 1])
  return y[..., None]


def mode_index(x: jax.Array) -> jax.Array:
  """Index of the nearest maximum (row of `MODE_CENTERS`).

  Args:
    x: `(..., 2)` solutions.

  Returns:
    `(...,)` int32 mode indices in [0, 9).
  """
  return _mode_index(base.check_designs(x, X_DIM))


@jax.jit
def _mode_index(x: jax.Array) -> jax.Array:
  centers = jnp.asarray(MODE_CENTERS, x.dtype).reshape(
      (1,) * (x.ndim - 1) + (NUM_MODES, X_DIM)
  )
  d2 = jnp.sum((x[..., None, :] - centers) ** 2, axis=-1)
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def sample_prior(key: jax.Array, n: int) -> jax.Array:
  """`(n, 2)` float32 draws from U(-1, 1)^2."""
  return _sample_prior(key, base.check_count(n))


@functools.partial(jax.jit, static_argnums=1)
def _sample_prior(key: jax.Array, n: int) -> jax.Array:
  return jax.random.uniform(
      key, (n, X_DIM), jnp.float32, minval=-1.0, maxval=1.0
  )


def make_dataset(key: jax.Array, n=None) -> tuple[np.ndarray, np.ndarray]:
  """Prior draws and their values: x `(n, 2)`, y `(n, 1)`, float32 numpy.

  `n=None` gives `DATA_SIZE` rows.
  """
  return base.simulated_dataset(sample_prior, simulate, key,
                                DATA_SIZE if n is None else n)


def task() -> base.Task:
  """The sinewave `Task` (exact simulator, default target 1.2)."""
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
      x_names=('x1', 'x2'),
      y_names=('y',),
      mode_index=mode_index,
      num_modes=NUM_MODES,
  )
