"""Paired data: validation, train/validation split, standardization."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def check_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
  """Validates paired data and returns float32 numpy copies.

  Args:
    x: (n, D) designs (a (n,) vector is read as D = 1).
    y: (n, M) properties (a (n,) vector is read as M = 1).

  Returns:
    (x, y) as float32 arrays of shapes (n, D) and (n, M).

  Raises:
    ValueError: on wrong ranks, a row-count mismatch, or non-finite values
      (the message names the array, the count and the first bad row).
  """
  arrays = []
  for name, a in (('x', x), ('y', y)):
    a = np.asarray(a, np.float32)
    if a.ndim == 1:
      a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
      raise ValueError(f'{name} must have shape (n, k) with n, k >= 1, '
                       f'got {a.shape}')
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
      raise ValueError(f'{name} has {int(bad.sum())} rows with NaN or inf '
                       f'(first: row {int(np.argmax(bad))})')
    arrays.append(a)
  x, y = arrays
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f'x and y have different numbers of rows: {x.shape[0]} vs {y.shape[0]}')
  return x, y


def train_val_split(key: Array, num_rows: int, val_fraction: float
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Random disjoint (train_idx, val_idx) index arrays, a pure fn of `key`."""
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
  perm = np.asarray(jax.random.permutation(key, num_rows))
  num_val = int(round(val_fraction * num_rows))
  if val_fraction > 0 and num_val == 0:
    num_val = 1
  return perm[num_val:], perm[:num_val]


class Standardizer(NamedTuple):
  """Per-column affine map to zero mean and unit variance.

  Attributes:
    mean: (k,) column means of the data it was fitted on.
    scale: (k,) column standard deviations (1 where a column is constant).
  """
  mean: Array
  scale: Array

  @classmethod
  def fit(cls, a) -> 'Standardizer':
    """Fits to (n, k) data."""
    a = jnp.asarray(a, jnp.float32)
    scale = a.std(0)
    return cls(a.mean(0), jnp.where(scale > 0, scale, 1.0))

  def forward(self, a: Array) -> Array:
    """(..., k) original units -> standardized units."""
    return (a - _lift(self.mean, a)) / _lift(self.scale, a)

  def inverse(self, a: Array) -> Array:
    """(..., k) standardized units -> original units."""
    return a * _lift(self.scale, a) + _lift(self.mean, a)


def _lift(v: Array, like: Array) -> Array:
  """(k,) -> (1, ..., 1, k) with the rank of `like` (explicit broadcasting)."""
  return jnp.reshape(v, (1,) * (like.ndim - 1) + (-1,))
