"""The task record shared by every benchmark and application."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

PriorSampler = Callable[[jax.Array, int], jax.Array]
Simulator = Callable[[jax.Array], jax.Array]
DataMaker = Callable[[jax.Array, Optional[int]], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Task:
  """An inverse problem: a prior over designs x, data, and (maybe) Omega.

  Attributes:
    name: registry name, e.g. 'sinewave'.
    x_dim: D, number of design parameters.
    y_dim: M, number of properties.
    lower: (D,) lower corner of the box where solutions are meaningful.
    upper: (D,) upper corner of that box.
    default_target: (M,) the target y* used when none is given.
    sample_prior: `(key, n) -> (n, D)` draws from the prior over designs.
    make_dataset: `(key, n) -> (x (n, D), y (n, M))` float32 numpy arrays;
      `n=None` gives the task's default size (`data_size`).
    data_size: default number of rows of `make_dataset`.
    simulate: `(n, D) -> (n, M)` forward process used for re-simulation, jit-
      able and vectorized; None when the task has none.
    simulator_kind: 'exact' for a true simulator, 'oracle' for a learned
      stand-in (re-simulation figures are then labelled "vs oracle").
    x_names: D short names of the design parameters (plots, tables).
    y_names: M short names of the properties.
    extra_targets: further (M,) targets at which the benchmark also runs
      protocol B (e.g. mos2's 0.5 eV next to its default 1.0 eV).
    augment: `(key, x (n, D)) -> (n, D)`, a random symmetry of the designs
      that leaves their properties unchanged (architected: periodic shifts,
      rotations and mirror images of the cell), for data augmentation in
      training (`config.train.augment`); None when the task has none.
    mode_index: `(..., D) -> (...,)` int index of the solution branch a
      design lies on, in [0, num_modes) (sinewave: its 9 curves), for mode
      coverage; None when the task has no such branches.
    num_modes: number of those branches.
    design_stats: `(n, D) designs -> {name: float}`, summaries of a set of
      designs that say whether they can be made (architected: binary
      pixels, porosity, periodic connectivity of the solid); None when the
      task has none.
    repair: `(n, D) -> (n, D)` designs in original units to the nearest ones
      that can be made (architected: solid islands outside the cell's largest
      periodic solid component turned void), jittable; `solve.repair` applies
      it to the candidates before they are ranked; None when the task has
      none.
    feasible: `(n, D) designs in original units -> (n,) bool`, inside the
      task's design space beyond its box (architected: porosity in the
      generator's range), jittable; with `solve.repair` ranking keeps the
      infeasible candidates last; None: every design in the box is.
  """

  name: str
  x_dim: int
  y_dim: int
  lower: np.ndarray
  upper: np.ndarray
  default_target: np.ndarray
  sample_prior: PriorSampler
  make_dataset: DataMaker
  data_size: int
  simulate: Optional[Simulator] = None
  simulator_kind: str = 'exact'
  x_names: tuple[str, ...] = ()
  y_names: tuple[str, ...] = ()
  extra_targets: tuple[np.ndarray, ...] = ()
  augment: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None
  mode_index: Optional[Callable[[jax.Array], jax.Array]] = None
  num_modes: int = 0
  design_stats: Optional[Callable[[np.ndarray], dict]] = None
  repair: Optional[Callable[[jax.Array], jax.Array]] = None
  feasible: Optional[Callable[[jax.Array], jax.Array]] = None

  @property
  def bounds(self) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each (D,)."""
    return self.lower, self.upper


def check_count(n) -> int:
  """Validates a number of rows: a positive integer (not a bool)."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f'n must be a positive integer; got {n!r}')
  return int(n)


def check_designs(x, x_dim: int) -> jax.Array:
  """Validates designs of shape (..., x_dim); integers become float32."""
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != x_dim:
    raise ValueError(
        f'x must have shape (..., {x_dim}); got shape {tuple(x.shape)}')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def simulated_dataset(sample_prior: PriorSampler, simulate: Simulator,
                      key: jax.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
  """n prior draws and their simulated properties, as float32 numpy.

  Returns:
    x (n, D) and y (n, M).
  """
  x = sample_prior(key, check_count(n))
  return np.asarray(x, np.float32), np.asarray(simulate(x), np.float32)
