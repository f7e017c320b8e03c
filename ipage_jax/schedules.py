"""Step -> value schedules (optax style) for loss weights and learning rate.

The dynamic bi-directional training of iPage (Chen et al.): for the
first part of training the forward fit dominates (lam_y = N_l >> 1, lam_x and
lam_z ~ 0); afterwards lam_y decays towards 0 while lam_x and lam_z rise to
N_l.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
_SHAPES = ('cosine', 'linear', 'exponential')


class LossWeights(NamedTuple):
  """The weights (lam_x, lam_y, lam_z) of L_x, L_y, L_z at one step."""
  x: Array
  y: Array
  z: Array


def ramp(start_value: float, end_value: float, begin_step: int,
         end_step: int, shape: str = 'cosine') -> optax.Schedule:
  """Constant `start_value` until `begin_step`, then a ramp to `end_value`.

  Args:
    start_value: value up to `begin_step`.
    end_value: value from `end_step` on.
    begin_step: first step of the transition.
    end_step: last step of the transition (> begin_step).
    shape: 'cosine' (half cosine), 'linear', or 'exponential' (geometric
      interpolation; both values must then be > 0).

  Returns:
    A function step -> value (a jnp scalar), jit-able.
  """
  if shape not in _SHAPES:
    raise ValueError(f'unknown ramp shape {shape!r}; expected one of {_SHAPES}')
  if end_step <= begin_step:
    raise ValueError(
        f'end_step ({end_step}) must be > begin_step ({begin_step})')
  if shape == 'exponential' and min(start_value, end_value) <= 0:
    raise ValueError('an exponential ramp needs positive start and end values')

  def schedule(step):
    frac = jnp.clip((step - begin_step) / (end_step - begin_step), 0.0, 1.0)
    if shape == 'cosine':
      frac = 0.5 * (1.0 - jnp.cos(jnp.pi * frac))
    if shape == 'exponential':
      return start_value * (end_value / start_value) ** frac
    return start_value + (end_value - start_value) * frac

  return schedule


def bidirectional_weights(total_steps: int, *, peak: float = 1.0,
                          xz_start: float = 0.0, y_end: float = 0.0,
                          switch_fraction: float = 0.5,
                          shape: str = 'cosine'
                          ) -> Callable[[Array], LossWeights]:
  """The (lam_x, lam_y, lam_z) schedule of dynamic bi-directional training.

  lam_y = peak and lam_x = lam_z = xz_start until `switch_fraction *
  total_steps`; then lam_y ramps to `y_end` and lam_x, lam_z ramp to `peak`
  by the last step.

  Args:
    total_steps: number of optimizer steps of the whole training.
    peak: N_l, the large weight.
    xz_start: lam_x and lam_z during the first part (~0).
    y_end: lam_y at the end (-> 0; a small positive value keeps f_y tied to
      y while the unsupervised losses take over).
    switch_fraction: share of the training with the forward fit dominant.
    shape: transition shape (see `ramp`).

  Returns:
    step -> LossWeights.
  """
  if total_steps < 2:
    raise ValueError(f'total_steps must be >= 2, got {total_steps}')
  if not 0.0 <= switch_fraction < 1.0:
    raise ValueError(f'switch_fraction must be in [0, 1), got {switch_fraction}')
  begin = int(switch_fraction * total_steps)
  end = max(total_steps - 1, begin + 1)
  lam_y = ramp(peak, y_end, begin, end, shape)
  lam_xz = ramp(xz_start, peak, begin, end, shape)

  def weights(step):
    xz = lam_xz(step)
    return LossWeights(x=xz, y=lam_y(step), z=xz)

  return weights


def exponential_learning_rate(init_value: float, end_value: float,
                              total_steps: int) -> optax.Schedule:
  """Learning rate decaying geometrically from init to end over training."""
  if init_value <= 0 or end_value <= 0:
    raise ValueError(
        f'learning rates must be > 0, got {init_value} and {end_value}')
  if total_steps < 1:
    raise ValueError(f'total_steps must be >= 1, got {total_steps}')
  return optax.exponential_decay(init_value, transition_steps=total_steps,
                                 decay_rate=end_value / init_value)
