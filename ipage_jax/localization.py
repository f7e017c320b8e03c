"""Batched localization: gradient descent on designs through a surrogate.

Phase 3 of iPage: starting from posterior samples x0 (n, D), minimize for
every row the squared error ||f(x) - y*||^2 of a differentiable forward model
f: (n, D) -> (n, M) (the INN's y-block, an MLP, or a true simulator), with an
optional Neural-Adjoint boundary penalty that keeps x inside a box.

All rows move at once in one compiled loop (`lax.scan`, or `lax.while_loop`
when stopping early on `tol`). The rows are independent: the objective is the
SUM over rows of the per-row losses, so its gradient with respect to row i is
the gradient of row i's own loss, and Adam acts elementwise, so one
`optax.adam` over the (n, D) array is exactly n independent Adams, each with
the given learning rate whatever n is. (A mean over rows would divide every
gradient by n; Adam is nearly scale invariant, but its `eps` is not.)

Two entry points:

  result = localize(f, x0, y_target, steps=500, learning_rate=5e-3)

for one call with a forward function of x alone, and

  localizer = make_localizer(apply_fn, steps=500, learning_rate=5e-3)
  result = localizer(params, x0, y_target)

which binds the hyperparameters once and returns a jitted function of
(params, x0, y_target) for a forward model `apply_fn(params, x)`, e.g.
`lambda p, x: inn.split_output(inn.apply(p, inn.pad_x(x))[0])[0]`. New
parameters or targets of the same shapes reuse the compiled loop (no
retracing); a closure-only forward function is `lambda _, x: f(x)` with
`params=None`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float]
ForwardFn = Callable[[Array], Array]
ApplyFn = Callable[[Any, Array], Array]
Bounds = tuple[ArrayLike, ArrayLike]
# progress(steps done, steps) on the host, from inside the compiled loop.
Progress = Callable[[int, int], None]
PROGRESS_UPDATES = 10


class LocalizeResult(NamedTuple):
  """What a localization run returns.

  Attributes:
    x: (n, D) localized designs.
    loss: (n,) final surrogate loss ||f(x) - y*||^2 per row (no boundary
      term), in squared units of y.
    boundary: (n,) final unweighted boundary penalty per row (`boundary_loss`;
      zeros without bounds), in units of x.
    steps: () int32, number of Adam updates applied (`steps`, or fewer when
      every row reached `tol`).
    trace: (steps,) mean over rows of the surrogate loss at the iterate each
      update started from, or None unless `trace=True`. With `tol`, entries
      after the last update are NaN.
  """

  x: Array
  loss: Array
  boundary: Array
  steps: Array
  trace: Optional[Array]


def boundary_loss(x: Array, lower: ArrayLike, upper: ArrayLike) -> Array:
  """Neural-Adjoint boundary penalty (Ren et al. 2020), per row.

  sum_d ReLU(|x_d - mu_d| - R_d / 2) with mu = (lower + upper) / 2 the box
  centre and R = upper - lower its width: zero inside the box, the L1
  distance to the box outside it.

  Args:
    x: (n, D) designs.
    lower: (D,) lower corner of the box.
    upper: (D,) upper corner of the box.

  Returns:
    (n,) penalty, in units of x.
  """
  x = jnp.asarray(x)
  lower = jnp.asarray(lower, x.dtype)
  upper = jnp.asarray(upper, x.dtype)
  if x.ndim != 2:
    raise ValueError(f'x must have shape (n, D), got {x.shape}')
  dim = x.shape[1]
  for name, v in (('lower', lower), ('upper', upper)):
    if v.shape != (dim,):
      raise ValueError(f'{name} must have shape ({dim},), got {v.shape}')
  centre = 0.5 * (lower + upper)
  half_width = 0.5 * (upper - lower)
  excess = jnp.abs(x - centre[None, :]) - half_width[None, :]
  return jnp.sum(jax.nn.relu(excess), axis=-1)


def binary_penalty(x: Array, lower: ArrayLike, upper: ArrayLike) -> Array:
  """(n,) 4 mean(u (1 - u)) of x (n, D) scaled to the box, u in [0, 1].

  0 when every coordinate sits on a face of the box (a binary design), 1
  when all sit at its centre; the localizer's `binarize_weight` ramps it in
  (a continuation towards designs that a threshold changes little).
  """
  lower, upper = jnp.asarray(lower, x.dtype), jnp.asarray(upper, x.dtype)
  u = jnp.clip((x - lower[None, :]) / (upper - lower)[None, :], 0.0, 1.0)
  return 4.0 * jnp.mean(u * (1.0 - u), axis=-1)


def make_localizer(
    apply_fn: ApplyFn,
    *,
    steps: int,
    learning_rate: Union[float, optax.Schedule],
    bounds: Optional[Bounds] = None,
    boundary_weight: float = 1.0,
    tol: Optional[float] = None,
    trace: bool = False,
    unroll: Union[int, bool] = 1,
    progress: Optional[Progress] = None,
    binarize_weight: float = 0.0,
) -> Callable[[Any, ArrayLike, ArrayLike], LocalizeResult]:
  """Binds the settings of a batched Adam localization; returns a function.

  Per row i the objective is

    L_i(x) = ||apply_fn(params, x)_i - y*_i||^2
             + boundary_weight * boundary_loss(x, lower, upper)_i
             + (k / steps) binarize_weight * binary_penalty(x, lower, upper)_i

  minimized by Adam (optax defaults b1=0.9, b2=0.999, eps=1e-8, as
  torch.optim.Adam) on the sum over rows, which equals n independent Adam
  runs (see the module docstring).

  Early stopping (`tol`): a row whose objective L_i falls below `tol` is
  frozen (neither x_i nor its Adam moments change any more) and the loop
  ends when every row is frozen or after `steps` updates. Since a frozen
  row stays put, each row's result still does not depend on the others.

  Args:
    apply_fn: forward model `(params, x (n, D)) -> (n, M)`, differentiable
      in x, acting on rows independently.
    steps: maximum number of Adam updates (>= 0).
    learning_rate: Adam step size in units of x, or an optax schedule.
    bounds: (lower, upper), each (D,), for the boundary penalty; None for
      no penalty.
    boundary_weight: weight of the penalty (>= 0); unused without bounds.
    tol: per-row objective below which a row stops (> 0), or None to run
      exactly `steps` updates with `lax.scan`.
    trace: also return the mean surrogate loss per step.
    unroll: `lax.scan` unroll factor (no effect with `tol`).
    progress: a host function `progress(done, steps)`, called from the
      compiled loop (`jax.debug.callback`) at step 0 and then about
      PROGRESS_UPDATES times, e.g. to log an ETA; it does not change the
      designs. Part of the compiled program: pass the same object to reuse
      a compiled localizer.
    binarize_weight: final weight of `binary_penalty` (needs `bounds`),
      ramped linearly from 0 at the first update k = 1 to this at the last;
      0: off.

  Returns:
    A jitted `localizer(params, x0 (n, D), y_target (M,) or (n, M)) ->
    LocalizeResult`. A (M,) target is shared by all rows; a (n, M) target
    gives row i its own target. Shapes are checked when tracing; NaN or inf
    in concrete inputs raise ValueError before the run. As with `jax.jit`,
    `localizer.lower(params, x0, y_target)` gives the lowered computation
    (e.g. `.compile()` ahead of time, or `.cost_analysis()`).
  """
  settings = _settings(steps, learning_rate, bounds, boundary_weight, tol,
                       trace, unroll, progress, binarize_weight)

  @jax.jit
  def run(params, x0, y_target):
    x0, y = _prepare(apply_fn, params, x0, y_target, settings['bounds'])
    return _localize(apply_fn, params, x0, y, **settings)

  def localizer(params: Any, x0: ArrayLike,
                y_target: ArrayLike) -> LocalizeResult:
    _check_finite(x0=x0, y_target=y_target)
    return run(params, x0, y_target)

  # Ahead-of-time use: localizer.lower(params, x0, y_target).compile().
  localizer.lower = run.lower
  return localizer


def localize(
    forward_fn: ForwardFn,
    x0: ArrayLike,
    y_target: ArrayLike,
    *,
    steps: int,
    learning_rate: Union[float, optax.Schedule],
    bounds: Optional[Bounds] = None,
    boundary_weight: float = 1.0,
    tol: Optional[float] = None,
    trace: bool = False,
    unroll: Union[int, bool] = 1,
    progress: Optional[Progress] = None,
    binarize_weight: float = 0.0,
) -> LocalizeResult:
  """Localizes every row of x0 towards y_target by batched Adam.

  A pure function (it may itself be wrapped in `jax.jit`); the loop runs as
  one compiled `lax.scan` / `lax.while_loop` either way. For repeated calls
  with the same shapes use `make_localizer`, which compiles once. The
  objective, early stopping and arguments are those of `make_localizer`.

  Args:
    forward_fn: `(n, D) -> (n, M)` differentiable forward model.
    x0: (n, D) starting designs.
    y_target: (M,) one target for all rows, or (n, M) one per row.
    steps, learning_rate, bounds, boundary_weight, tol, trace, unroll,
      progress, binarize_weight: see `make_localizer`.

  Returns:
    A `LocalizeResult`.

  Raises:
    ValueError: for shapes that do not fit forward_fn, NaN / inf in x0,
      y_target or the bounds (checked on concrete values only), or bad
      settings.
  """
  settings = _settings(steps, learning_rate, bounds, boundary_weight, tol,
                       trace, unroll, progress, binarize_weight)
  _check_finite(x0=x0, y_target=y_target)
  apply_fn = lambda _, x: forward_fn(x)
  x0, y = _prepare(apply_fn, None, x0, y_target, settings['bounds'])
  return _localize(apply_fn, None, x0, y, **settings)


# ---------------------------------------------------------------------------
# Validation.


def _is_concrete(v: Any) -> bool:
  return not isinstance(v, jax.core.Tracer)


def _check_finite(**arrays: ArrayLike) -> None:
  """Raises ValueError if a concrete array holds NaN or inf."""
  for name, v in arrays.items():
    if not _is_concrete(v):
      continue
    v = np.asarray(v)
    if np.issubdtype(v.dtype, np.number) and not np.all(np.isfinite(v)):
      raise ValueError(f'{name} contains NaN or inf values')


def _settings(steps, learning_rate, bounds, boundary_weight, tol, trace,
              unroll, progress, binarize_weight=0.0) -> dict[str, Any]:
  """Checks the hyperparameters; returns them as keyword arguments."""
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
    raise ValueError(f'steps must be an int, got {steps!r}')
  if steps < 0:
    raise ValueError(f'steps must be >= 0, got {steps}')
  if not callable(learning_rate):
    if not np.ndim(learning_rate) == 0 or not float(learning_rate) > 0:
      raise ValueError(
          f'learning_rate must be a positive number or a schedule, got '
          f'{learning_rate!r}')
  if not float(boundary_weight) >= 0:
    raise ValueError(f'boundary_weight must be >= 0, got {boundary_weight!r}')
  if tol is not None and not float(tol) > 0:
    raise ValueError(f'tol must be > 0 or None, got {tol!r}')
  if not float(binarize_weight) >= 0:
    raise ValueError(f'binarize_weight must be >= 0, got {binarize_weight!r}')
  if binarize_weight and bounds is None:
    raise ValueError('binarize_weight needs bounds (the box whose faces '
                     'are the binary values)')
  if progress is not None and not callable(progress):
    raise ValueError(f'progress must be callable or None, got {progress!r}')
  if bounds is not None:
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
      raise ValueError(f'bounds must be a pair (lower, upper), got {bounds!r}')
    lower, upper = bounds
    _check_finite(lower=lower, upper=upper)
    if (_is_concrete(lower) and _is_concrete(upper)
        and np.any(np.asarray(lower) > np.asarray(upper))):
      raise ValueError(
          f'bounds need lower <= upper, got lower={lower}, upper={upper}')
    bounds = (lower, upper)
  return dict(steps=int(steps), learning_rate=learning_rate, bounds=bounds,
              boundary_weight=float(boundary_weight),
              tol=None if tol is None else float(tol), trace=bool(trace),
              unroll=unroll, progress=progress,
              binarize_weight=float(binarize_weight))


def _prepare(apply_fn: ApplyFn, params: Any, x0: ArrayLike,
             y_target: ArrayLike,
             bounds: Optional[Bounds]) -> tuple[Array, Array]:
  """Checks shapes; returns x0 (n, D) float and the target as (n, M)."""
  x0 = jnp.asarray(x0)
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    x0 = x0.astype(jnp.float32)
  if x0.ndim != 2:
    raise ValueError(f'x0 must have shape (n, D), got {x0.shape}')
  n, dim = x0.shape
  out = jax.eval_shape(apply_fn, params, x0)
  if not hasattr(out, 'shape') or len(out.shape) != 2 or out.shape[0] != n:
    got = getattr(out, 'shape', type(out).__name__)
    raise ValueError(
        f'forward_fn must map (n, D) = {x0.shape} to (n, M), got {got}')
  width = out.shape[1]
  y = jnp.asarray(y_target, x0.dtype)
  if y.shape == (width,):
    y = jnp.broadcast_to(y[None, :], (n, width))
  elif y.shape != (n, width):
    raise ValueError(
        f'y_target must have shape ({width},) or ({n}, {width}) to match '
        f'forward_fn output {out.shape}, got {y.shape}')
  if bounds is not None:
    for name, v in zip(('lower', 'upper'), bounds):
      if np.shape(v) != (dim,):
        raise ValueError(
            f'bounds {name} must have shape ({dim},), got {np.shape(v)}')
  return x0, y


# ---------------------------------------------------------------------------
# The loop.


def _localize(apply_fn: ApplyFn, params: Any, x0: Array, y: Array, *,
              steps: int, learning_rate, bounds: Optional[Bounds],
              boundary_weight: float, tol: Optional[float], trace: bool,
              unroll, progress: Optional[Progress],
              binarize_weight: float) -> LocalizeResult:
  """Runs Adam on all rows; shapes already checked (x0 (n, D), y (n, M))."""
  if bounds is not None:
    lower = jnp.asarray(bounds[0], x0.dtype)
    upper = jnp.asarray(bounds[1], x0.dtype)

  def terms(x):
    """(n,) squared error and (n,) unweighted boundary penalty."""
    sq_err = jnp.sum(jnp.square(apply_fn(params, x) - y), axis=-1)
    if bounds is None:
      return sq_err, jnp.zeros_like(sq_err)
    return sq_err, boundary_loss(x, lower, upper)

  def objective(x, k):
    """Sum over rows at update k (1-based) and the per-row terms."""
    sq_err, bd = terms(x)
    per_row = sq_err if bounds is None else sq_err + boundary_weight * bd
    if binarize_weight:
      ramp = binarize_weight * k.astype(x.dtype) / max(steps, 1)
      per_row = per_row + ramp * binary_penalty(x, lower, upper)
    # A sum, not a mean: row i's gradient is that of its own loss.
    return jnp.sum(per_row), (sq_err, per_row)

  grad_fn = jax.grad(objective, has_aux=True)
  opt = optax.adam(learning_rate)
  opt_state = opt.init(x0)

  if tol is None:
    def body(carry, done):
      x, state = carry
      grads, (sq_err, _) = grad_fn(x, done)
      updates, state = opt.update(grads, state, x)
      x = optax.apply_updates(x, updates)
      if progress is not None:
        _report(progress, done, steps)
      return (x, state), (jnp.mean(sq_err) if trace else None)

    if progress is not None:
      _report(progress, jnp.asarray(0, jnp.int32), steps)
    done = jnp.arange(1, steps + 1, dtype=jnp.int32)
    (x, _), mean_loss = jax.lax.scan(body, (x0, opt_state), done,
                                     length=steps, unroll=unroll)
    taken = jnp.asarray(steps, jnp.int32)
  else:
    x, taken, mean_loss = _while(grad_fn, opt, x0, opt_state, steps, tol,
                                 trace, progress)

  sq_err, bd = terms(x)
  return LocalizeResult(x=x, loss=sq_err, boundary=bd, steps=taken,
                        trace=mean_loss if trace else None)


def _report(progress: Progress, done: Array, steps: int) -> None:
  """Calls `progress(done, steps)` on the host at step 0, every
  steps // PROGRESS_UPDATES steps and at the last one."""
  every = max(steps // PROGRESS_UPDATES, 1)
  jax.lax.cond((done % every == 0) | (done == steps),
               lambda: jax.debug.callback(
                   lambda d: progress(int(d), steps), done),
               lambda: None)


def _while(grad_fn, opt, x0, opt_state, steps, tol, trace, progress):
  """Adam with per-row freezing below `tol`; stops when all rows froze."""
  n = x0.shape[0]
  dtype = x0.dtype
  trace0 = jnp.full((steps,) if trace else (0,), jnp.nan, dtype)

  def keep_active(active, new, old):
    # Adam's moments have the shape of x and are frozen with their rows;
    # scalar leaves (the shared step count) move on.
    if jnp.ndim(new) >= 1 and jnp.shape(new)[0] == n:
      mask = active.reshape((n,) + (1,) * (jnp.ndim(new) - 1))
      return jnp.where(mask, new, old)
    return new

  def cond(carry):
    k, _, _, done, _ = carry
    return jnp.logical_and(k < steps, jnp.logical_not(done))

  def body(carry):
    k, x, state, _, mean_loss = carry
    grads, (sq_err, per_row) = grad_fn(x, k + 1)
    active = per_row >= tol
    done = jnp.logical_not(jnp.any(active))
    updates, new_state = opt.update(grads, state, x)
    x = jnp.where(active[:, None], optax.apply_updates(x, updates), x)
    state = jax.tree_util.tree_map(
        lambda a, b: keep_active(active, a, b), new_state, state)
    if trace:  # entry k stays NaN on the final, update-free iteration
      mean_loss = mean_loss.at[k].set(
          jnp.where(done, mean_loss[k], jnp.mean(sq_err)))
    k = k + jnp.where(done, 0, 1).astype(k.dtype)
    if progress is not None:
      _report(progress, k, steps)
    return k, x, state, done, mean_loss

  if progress is not None:
    _report(progress, jnp.asarray(0, jnp.int32), steps)
  carry = (jnp.asarray(0, jnp.int32), x0, opt_state, jnp.asarray(steps == 0),
           trace0)
  taken, x, _, _, mean_loss = jax.lax.while_loop(cond, body, carry)
  return x, taken, mean_loss


__all__: Sequence[str] = ('LocalizeResult', 'binary_penalty',
                          'boundary_loss', 'localize', 'make_localizer')
