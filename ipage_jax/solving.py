"""Phases 2 and 3 for any method: draw, localize, keep the best.

  settings = solve_settings(config.solve)          # checked once
  sols = solve(model, solver, key, y_target, num_solutions, settings)

is the composition of five steps that callers may also run one by one
(e.g. to time them):

  plan = make_plan(model, solver, y_target, num_solutions, settings)
  x0 = draw_candidates(solver, key, plan)          # (T, n, D) standardized
  moved = localize_candidates(solver, plan, x0)    # batched Adam
  sols = select_solutions(model, solver, plan, x0, moved)
  sols = retry_failures(model, solver, key, plan, sols)  # solve.retries

A method enters as a `Solver`: how it draws candidates for standardized
targets, and the differentiable forward model that localization descends
and ranking scores (`Forward`, any `apply(net, params, x_std) -> y_std`:
the method's learned surrogate, or with `solve.forward='simulator'` the
task's differentiable simulator wrapped in the scalers, `with_route`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ipage_jax import localization
from ipage_jax import model as model_lib
from ipage_jax import parallel as parallel_lib
from ipage_jax import ranking
from ipage_jax import sampling

Array = jax.Array
# draw(key, y_std (T, M), n, settings) -> (T, n, D) standardized designs
# (`settings`: the `SolveSettings`, e.g. its latent `sampler`).
Draw = Callable[[Array, Array, int, 'SolveSettings'], Array]


class SolveSettings(NamedTuple):
  """The `solve` section of a config, checked (see `default_config`)."""
  sampler: str
  localize_steps: int
  localize_learning_rate: float
  localize_final_learning_rate: float
  boundary_weight: float
  localize_tol: float
  oversample: float
  clip_to_box: bool
  rank_by: str
  accept_error: float
  min_candidates: int
  forward: str
  binarize: bool
  binarize_weight: float
  posterior_keep: float
  retries: int
  repair: bool


FORWARDS = ('surrogate', 'simulator')


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _positive(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(
      v, bool) and v > 0  # also refuses NaN


def _non_negative(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(
      v, bool) and v >= 0


_CHECKS = {
    'sampler': (lambda v: isinstance(v, str), 'a sampler name'),
    'localize_steps': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'localize_learning_rate': (_positive, '> 0'),
    'localize_final_learning_rate': (_positive, '> 0'),
    'boundary_weight': (_non_negative, '>= 0'),
    'localize_tol': (_non_negative, '>= 0'),
    'oversample': (lambda v: _non_negative(v) and v >= 1, '>= 1'),
    'clip_to_box': (lambda v: isinstance(v, (bool, np.bool_)),
                    'True or False'),
    'rank_by': (lambda v: v in ranking.NAMES, f'one of {ranking.NAMES}'),
    'accept_error': (_non_negative, '>= 0'),
    'min_candidates': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'forward': (lambda v: v in FORWARDS, f'one of {FORWARDS}'),
    'binarize': (lambda v: isinstance(v, (bool, np.bool_)), 'True or False'),
    'binarize_weight': (_non_negative, '>= 0'),
    'posterior_keep': (lambda v: _positive(v) and v <= 1, 'in (0, 1]'),
    'retries': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'repair': (lambda v: isinstance(v, (bool, np.bool_)), 'True or False'),
}


def solve_settings(section: ml_collections.ConfigDict | dict,
                   **overrides: Any) -> SolveSettings:
  """Parses and checks a `solve` section once.

  Args:
    section: the fields of `SolveSettings` (a config's `solve` section).
    **overrides: replacements for some fields; None leaves a field as is.

  Raises:
    ValueError: naming the field, for a missing, unknown or bad setting.
  """
  values = dict(section.items())
  values.update({k: v for k, v in overrides.items() if v is not None})
  unknown = sorted(set(values) - set(SolveSettings._fields))
  missing = sorted(set(SolveSettings._fields) - set(values))
  if unknown or missing:
    raise ValueError(f'solve settings: unknown {unknown}, missing {missing}; '
                     f'expected {sorted(SolveSettings._fields)}')
  for name, (ok, expected) in _CHECKS.items():
    if not ok(values[name]):
      raise ValueError(f'solve.{name} must be {expected}, got '
                       f'{values[name]!r}')
  sampling.get_sampler(values['sampler'])  # unknown names raise
  return SolveSettings(**{name: values[name]
                          for name in SolveSettings._fields})


class Forward(NamedTuple):
  """A differentiable forward model on standardized data.

  Attributes:
    apply: module-level `apply(net, params, x_std (n, D)) -> y_std (n, M)`;
      with `net` it keys the cache of compiled localization loops.
    net: a hashable network (e.g. a Flax module).
    params: its parameters.
  """
  apply: Callable[[Any, Any, Array], Array]
  net: Any
  params: Any


def _simulated(simulate: Callable[[Array], Array], scalers, x_std: Array
               ) -> Array:
  """A simulator in original units as `apply(net, params, x_std) -> y_std`."""
  x_scaler, y_scaler = scalers
  return y_scaler.forward(simulate(x_scaler.inverse(x_std)))


def simulator_forward(model: model_lib.Model,
                      simulate: Callable[[Array], Array]) -> Forward:
  """`simulate` ((n, D) -> (n, M), original units, differentiable) as the
  forward model of localization and ranking, in the model's standardized
  units (`solve.forward='simulator'`)."""
  return Forward(_simulated, simulate, (model.x_scaler, model.y_scaler))


def with_route(solver: 'Solver', model: model_lib.Model,
               settings: SolveSettings,
               simulate: Optional[Callable[[Array], Array]],
               repair: Optional[Callable[[Array], Array]] = None,
               feasible: Optional[Callable[[Array], Array]] = None
               ) -> 'Solver':
  """The solver the settings ask for: its forward model and its repair.

  `settings.forward`: 'surrogate' keeps the method's own forward model (a
  learned one); 'simulator' puts the differentiable true simulator
  `simulate` in its place, which localization then descends and ranking
  scores directly (every Adam step simulates every candidate once, with its
  gradient). `settings.repair`: the task's `repair` (original units) maps
  every candidate to a design that can be made before it is ranked, and
  its `feasible` (if given) ranks the designs outside its design space
  last.

  Raises:
    ValueError: 'simulator' without a `simulate` function, or `repair`
      asked for without a `repair` function.
  """
  if settings.repair:
    if repair is None:
      raise ValueError('solve.repair=True needs the task\'s repair function '
                       '(repair=...); this task has none')
    solver = solver._replace(repair=repair, feasible=feasible)
  if settings.forward == 'surrogate':
    return solver
  if simulate is None:
    raise ValueError("solve.forward='simulator' needs the task's "
                     'differentiable simulator (simulate=...)')
  return solver._replace(forward=simulator_forward(model, simulate))


class Solver(NamedTuple):
  """How a method proposes and judges candidates.

  Attributes:
    draw: `draw(key, y_std (T, M), n, settings) -> (T, n, D)` standardized
      candidates (posterior samples, random starts, ...) for the solve
      settings (latent `sampler`, iPage's `posterior_keep`).
    forward: the model localization descends and ranking scores; None for
      a method without one (then `y_surrogate` / `surrogate_error` are NaN).
    typicality: `(n, D) standardized designs -> (n,)`, lower = more typical
      of the training data (`solve.rank_by='typicality'`); None: no latent.
    localize: run localization and keep the best of the oversampled
      candidates; False returns N candidates as drawn.
    repair: `(n, D) -> (n, D)` designs in original units to ones that can
      be made, applied to every candidate (after `solve.binarize`) before
      it is ranked; None: designs as they are (see `with_route`).
    feasible: `(n, D) designs in original units -> (n,) bool`, inside the
      task's design space; ranking keeps the infeasible candidates last.
      None: every design is feasible.
  """
  draw: Draw
  forward: Optional[Forward]
  typicality: Optional[Callable[[Array], Array]] = None
  localize: bool = True
  repair: Optional[Callable[[Array], Array]] = None
  feasible: Optional[Callable[[Array], Array]] = None


class Solutions(NamedTuple):
  """Output of `solve`; leading shape (N,) for one target, (T, N) for many.

  Attributes:
    x: (..., N, D) localized designs, original units.
    x_posterior: (..., N, D) the same candidates before localization.
    y_surrogate: (..., N, M) forward-model prediction at `x`.
    surrogate_error: (..., N) ||f_y(x) - y*||^2, original units.
    y_target: (..., M) the targets.
    gradient_steps_per_solution: forward-model gradient evaluations
      (forward + backward) spent per returned solution, oversampling and
      retries included.
  """
  x: np.ndarray
  x_posterior: np.ndarray
  y_surrogate: np.ndarray
  surrogate_error: np.ndarray
  y_target: np.ndarray
  gradient_steps_per_solution: float = 0.0


class Plan(NamedTuple):
  """What `make_plan` resolves before any work.

  Attributes:
    settings: the solve settings.
    targets: (T, M) targets, original units.
    targets_std: (T, M) standardized targets.
    single: one (M,) target was given (leading shape (N,), not (T, N)).
    num_solutions: N, kept per target.
    num_draw: candidates drawn (and localized) per target, >= N.
    lower / upper: (D,) the box in standardized units (boundary penalty,
      acceptance, `clip_to_box`).
    localize: localization and ranking run.
    mesh / chunk: devices and most rows per localization call.
  """
  settings: SolveSettings
  targets: np.ndarray
  targets_std: Array
  single: bool
  num_solutions: int
  num_draw: int
  lower: np.ndarray
  upper: np.ndarray
  localize: bool
  mesh: Optional[jax.sharding.Mesh]
  chunk: int


class Localized(NamedTuple):
  """Output of `localize_candidates`.

  Attributes:
    x: (T * num_draw, D) standardized designs.
    steps: Adam updates run (fewer than `localize_steps` when every row
      reached `localize_tol`).
  """
  x: Array
  steps: int


def check_targets(y_target, y_dim: int,
                  y_range: Optional[tuple[np.ndarray, np.ndarray]] = None
                  ) -> np.ndarray:
  """Validates targets: (M,) or (T, M) finite; warns outside `y_range`."""
  y_target = np.asarray(y_target, np.float32)
  if y_target.ndim not in (1, 2) or y_target.shape[-1] != y_dim:
    raise ValueError(f'targets must have shape ({y_dim},) or (T, {y_dim}), '
                     f'got {y_target.shape}')
  if not np.isfinite(y_target).all():
    raise ValueError('targets contain NaN or inf')
  if y_range is not None:
    outside = ((y_target < y_range[0]) | (y_target > y_range[1])).any(-1)
    if outside.any():
      warnings.warn(
          f'{int(np.sum(outside))} target(s) lie outside the training data '
          f'range [{y_range[0]}, {y_range[1]}]; solutions there are '
          'extrapolations', UserWarning)
  return y_target


def make_plan(model: model_lib.Model, solver: Solver, y_target,
              num_solutions: int, settings: SolveSettings,
              bounds: Optional[tuple[Any, Any]] = None) -> Plan:
  """Checks the request and sizes the work.

  Args:
    model: the fitted model (scalers, boxes, `config.parallel`).
    solver: the method's solver.
    y_target: (M,) or (T, M) targets, original units.
    num_solutions: N designs per target.
    settings: from `solve_settings`.
    bounds: (lower (D,), upper (D,)) box in original units (default: the
      training box).
  """
  if num_solutions < 1:
    raise ValueError(f'num_solutions must be >= 1, got {num_solutions}')
  if solver.localize and solver.forward is None:
    raise ValueError('localization needs a forward model')
  targets = check_targets(y_target, model.y_dim, model.y_range)
  single = targets.ndim == 1
  targets = np.atleast_2d(targets)
  num_draw = _num_draw(settings, solver.localize, num_solutions)
  lower, upper = bounds if bounds is not None else model.x_range
  lo, hi = (np.asarray(model.x_scaler.forward(
      jnp.asarray(b, jnp.float32)[None])[0]) for b in (lower, upper))
  par = model.config.get('parallel')
  return Plan(settings=settings, targets=targets,
              targets_std=model.y_scaler.forward(jnp.asarray(targets)),
              single=single, num_solutions=num_solutions, num_draw=num_draw,
              lower=lo, upper=hi, localize=solver.localize,
              mesh=parallel_lib.mesh_from_config(par),
              chunk=0 if par is None else int(par.get('localize_chunk', 0)))


def _num_draw(settings: SolveSettings, localize: bool,
              num_solutions: int) -> int:
  """Candidates drawn per target for N = `num_solutions` kept."""
  # Oversampling: draw `oversample` times more candidates, localize them
  # all, keep per target the N best (see `ranking`). This drops the rare
  # samples that localization leaves stuck at a critical point of the
  # surrogate (visible from the surrogate alone, no simulator needed).
  oversample = float(settings.oversample) if localize else 1.0
  num_draw = int(np.ceil(num_solutions * oversample))
  if localize and settings.rank_by == 'diversity' and num_solutions > 1:
    num_draw = max(num_draw, int(settings.min_candidates))
  return num_draw


def _project(plan: Plan, x: Array) -> Array:
  """`clip_to_box`: x (..., D) standardized onto the box."""
  if not plan.settings.clip_to_box:
    return x
  return jnp.clip(x, jnp.broadcast_to(plan.lower, x.shape),
                  jnp.broadcast_to(plan.upper, x.shape))


def _binarize(plan: Plan, x: Array) -> Array:
  """`solve.binarize`: every coordinate of x (..., D) standardized to the
  nearer face of the box (e.g. densities in [0, 1] thresholded at 0.5)."""
  if not plan.settings.binarize:
    return x
  lo = jnp.broadcast_to(plan.lower, x.shape)
  hi = jnp.broadcast_to(plan.upper, x.shape)
  return jnp.where(x >= 0.5 * (lo + hi), hi, lo)


def _finish(model: model_lib.Model, solver: Solver, plan: Plan, x: Array
            ) -> Array:
  """The designs x (..., D) standardized as they would be made:
  `solve.binarize`, then the solver's `repair`."""
  x = _binarize(plan, x)
  if solver.repair is None:
    return x
  flat = x.reshape(-1, x.shape[-1])
  fixed = solver.repair(model.x_scaler.inverse(flat))
  return model.x_scaler.forward(fixed).reshape(x.shape)


def draw_candidates(solver: Solver, key: Array, plan: Plan) -> Array:
  """Phase 2: (T, num_draw, D) standardized candidates."""
  return _project(plan, solver.draw(key, plan.targets_std, plan.num_draw,
                                    plan.settings))


def localize_candidates(solver: Solver, plan: Plan, x_draw: Array,
                        progress: Optional[localization.Progress] = None
                        ) -> Localized:
  """Phase 3: batched Adam on every candidate through `solver.forward`.

  Rows are split over `plan.mesh` in chunks of `plan.chunk` rows when the
  config's `parallel` section asks for it (same designs up to rounding).
  `progress(done, steps)` is called from the loop (see
  `localization.make_localizer`); equal objects reuse the compiled loop.
  """
  flat_x = x_draw.reshape(-1, x_draw.shape[-1])
  if not plan.localize:
    return Localized(flat_x, 0)
  s = plan.settings
  flat_t = jnp.repeat(plan.targets_std, plan.num_draw, axis=0)
  box = None
  if s.boundary_weight > 0 or s.binarize_weight > 0:
    box = (tuple(plan.lower.tolist()), tuple(plan.upper.tolist()))
  forward = solver.forward
  localizer = _localizer(forward.apply, forward.net, s.localize_steps,
                         s.localize_learning_rate,
                         s.localize_final_learning_rate, box,
                         s.boundary_weight, float(s.localize_tol) or None,
                         progress, float(s.binarize_weight))
  if plan.mesh is None and plan.chunk == 0:
    result = localizer(forward.params, flat_x, flat_t)
  else:  # rows split over devices / hosts, in chunks
    result = parallel_lib.localize_sharded(
        localizer, forward.params, flat_x, flat_t, plan.mesh, plan.chunk)
  steps = s.localize_steps
  if s.localize_tol:  # stopped early: the updates actually run
    steps = int(np.max(np.asarray(result.steps)))
  return Localized(_project(plan, result.x), steps)


@functools.lru_cache(maxsize=16)
def _localizer(apply: Callable, net: Any, steps: int, learning_rate: float,
               final_learning_rate: float,
               box: Optional[tuple[tuple[float, ...], tuple[float, ...]]],
               boundary_weight: float, tol: Optional[float],
               progress: Optional[localization.Progress],
               binarize_weight: float = 0.0):
  """A compiled localizer per setting, reused across `solve` calls.

  The Adam step size decays from `learning_rate` to `final_learning_rate`
  along a cosine: large steps first to reach the level set from far-away
  samples, small ones at the end so the iterates settle on it.
  """
  schedule = learning_rate
  if final_learning_rate != learning_rate:
    schedule = optax.cosine_decay_schedule(
        learning_rate, max(steps, 1), final_learning_rate / learning_rate)
  return localization.make_localizer(
      functools.partial(apply, net), steps=steps, learning_rate=schedule,
      bounds=box, boundary_weight=boundary_weight, tol=tol,
      progress=progress, binarize_weight=binarize_weight)


def select_solutions(model: model_lib.Model, solver: Solver, plan: Plan,
                     x_draw: Array, moved: Localized) -> Solutions:
  """Ranks the candidates (`ranking`), keeps N per target, packs them."""
  num_targets, num_draw = plan.targets.shape[0], plan.num_draw
  d = x_draw.shape[-1]
  flat_x = _finish(model, solver, plan, moved.x)
  x_draw = _finish(model, solver, plan, x_draw)
  repeat_targets = jnp.repeat(jnp.asarray(plan.targets), num_draw, 0)
  if solver.forward is None:
    y_sur = jnp.full(repeat_targets.shape, jnp.nan)
    err = jnp.full(repeat_targets.shape[:1], jnp.nan)
    keep = jnp.broadcast_to(jnp.arange(plan.num_solutions),
                            (num_targets, plan.num_solutions))
  else:
    f = solver.forward
    y_sur = model.y_scaler.inverse(f.apply(f.net, f.params, flat_x))
    err = jnp.sum(jnp.square(y_sur - repeat_targets), -1)
    keep = _rank(model, solver, plan, flat_x, y_sur, err)
    keep = jnp.sort(keep, axis=1)
  rows = (keep + num_draw * jnp.arange(num_targets)[:, None]).reshape(-1)
  lead = ((plan.num_solutions,) if plan.single
          else (num_targets, plan.num_solutions))
  as_np = lambda a, tail: np.asarray(a[rows]).reshape(lead + tail)
  return Solutions(
      x=as_np(model.x_scaler.inverse(flat_x), (d,)),
      x_posterior=as_np(model.x_scaler.inverse(x_draw.reshape(-1, d)), (d,)),
      y_surrogate=as_np(y_sur, (model.y_dim,)),
      surrogate_error=as_np(err, ()),
      y_target=plan.targets[0] if plan.single else plan.targets,
      gradient_steps_per_solution=(moved.steps * num_draw
                                   / plan.num_solutions))


def _rank(model: model_lib.Model, solver: Solver, plan: Plan, flat_x: Array,
          y_sur: Array, err: Array) -> Array:
  """(T, N) indices of the kept candidates (the rule of `solve.rank_by`)."""
  shape = (plan.targets.shape[0], plan.num_draw)
  s = plan.settings
  rank_by = s.rank_by if plan.localize else 'surrogate'  # drawn: as is
  feasible = None
  if solver.feasible is not None:
    feasible = solver.feasible(model.x_scaler.inverse(flat_x))
  if rank_by == 'surrogate':
    return ranking.by_surrogate(ranking.Candidates(
        flat_x.reshape(shape + flat_x.shape[-1:]), err.reshape(shape),
        None, feasible=None if feasible is None else feasible.reshape(shape)),
        plan.num_solutions)
  flat_t = jnp.repeat(plan.targets_std, plan.num_draw, axis=0)
  err_std = jnp.sum(jnp.square(model.y_scaler.forward(y_sur) - flat_t), -1)
  accepted = ranking.accepted(flat_x, err_std, s.accept_error, plan.lower,
                              plan.upper)
  if feasible is not None:
    accepted = accepted & feasible
  typicality = None
  if rank_by == 'typicality' and solver.typicality is not None:
    typicality = solver.typicality(flat_x).reshape(shape)
  candidates = ranking.Candidates(
      x=flat_x.reshape(shape + flat_x.shape[-1:]), score=err.reshape(shape),
      accepted=accepted.reshape(shape), typicality=typicality)
  return ranking.get(rank_by)(candidates, plan.num_solutions)


def retry_failures(model: model_lib.Model, solver: Solver, key: Array,
                   plan: Plan, sols: Solutions,
                   progress: Optional[localization.Progress] = None
                   ) -> Solutions:
  """`solve.retries` rounds for the targets whose solutions missed.

  A kept solution fails when its surrogate error in standardized y units
  exceeds `solve.accept_error` (all the candidates of a target can stall
  at a local minimum of the surrogate, which the surrogate alone shows),
  or when it lies outside the task's design space (`solver.feasible`; all
  the candidates of a target can be infeasible, e.g. architected cells
  outside the data's porosity range after the repair). Round r (1, 2, ...)
  solves again, with the key `fold_in(key, r)`, the targets with a failing
  solution only, for K solutions each, K the most failing solutions of a
  target (candidates drawn as for K solutions: oversampling, diversity
  pool), localized and ranked as in the first pass; a failing solution is
  replaced by a better new one: feasible before infeasible, then of lower
  standardized error (the worst failing one meets the best new one, and
  so on). The other solutions stay as they were, bit for bit. Methods that
  do not localize get `sols` back.

  Args:
    model, solver, plan: as for `select_solutions`.
    key: the PRNG key of the first pass's draws.
    sols: the first pass's solutions, leading shape (N,) or (T, N).
    progress: `progress(done, steps)` of the localizations.

  Returns:
    Solutions of the same shapes; `gradient_steps_per_solution` adds the
    retries' localizations, averaged over all T N solutions.
  """
  if not plan.localize:
    return sols
  num_targets, n = plan.targets.shape[0], plan.num_solutions
  lead = (num_targets, n)
  names = ('x', 'x_posterior', 'y_surrogate', 'surrogate_error')
  arrays = {name: np.array(getattr(sols, name)).reshape(
      lead + getattr(sols, name).shape[1 if plan.single else 2:])
            for name in names}  # (T, N, ...) copies
  steps = sols.gradient_steps_per_solution
  for r in range(1, plan.settings.retries + 1):
    err = _error_std(model, plan, arrays['y_surrogate'])
    infeasible = ~_feasible(solver, arrays['x'])
    failing = (err > plan.settings.accept_error) | infeasible
    rows = np.flatnonzero(failing.any(1))
    if rows.size == 0:
      break
    k = int(failing.sum(1).max())
    sub = plan._replace(
        targets=plan.targets[rows], targets_std=plan.targets_std[rows],
        single=False, num_solutions=k,
        num_draw=_num_draw(plan.settings, True, k))
    x_draw = draw_candidates(solver, jax.random.fold_in(key, r), sub)
    moved = localize_candidates(solver, sub, x_draw, progress)
    new = select_solutions(model, solver, sub, x_draw, moved)
    new_err = _error_std(model, sub, new.y_surrogate)  # (F, K)
    new_infeasible = ~_feasible(solver, new.x)
    # Slots: a target's failing ones worst first (infeasible, then by
    # error), its new ones best first.
    old_order = np.lexsort((-err[rows], ~infeasible[rows],
                            ~failing[rows]))[:, :k]
    new_order = np.lexsort((new_err, new_infeasible))
    take = lambda a, order: np.take_along_axis(a, order, 1)
    old_inf, new_inf = take(infeasible[rows], old_order), take(
        new_infeasible, new_order)
    better = take(failing[rows], old_order) & (
        (new_inf < old_inf) | ((new_inf == old_inf) & (
            take(new_err, new_order) < take(err[rows], old_order))))
    i, j = np.nonzero(better)
    for name in names:
      arrays[name][rows[i], old_order[i, j]] = np.asarray(
          getattr(new, name))[i, new_order[i, j]]
    steps += moved.steps * sub.num_draw * rows.size / (num_targets * n)
  return sols._replace(
      gradient_steps_per_solution=steps,
      **{name: arrays[name].reshape(getattr(sols, name).shape)
         for name in names})


def _feasible(solver: Solver, x: np.ndarray) -> np.ndarray:
  """(T, N) bool: the designs x (T, N, D), original units, inside the
  task's design space (`solver.feasible`; all True without one)."""
  if solver.feasible is None:
    return np.ones(x.shape[:-1], bool)
  flat = jnp.asarray(x.reshape(-1, x.shape[-1]))
  return np.asarray(solver.feasible(flat)).reshape(x.shape[:-1])


def _error_std(model: model_lib.Model, plan: Plan, y_sur: np.ndarray
               ) -> np.ndarray:
  """(T, N) squared surrogate errors of y_sur (T, N, M) against the plan's
  targets, standardized units (as `solve.accept_error`)."""
  y_std = model.y_scaler.forward(
      jnp.asarray(y_sur.reshape(-1, y_sur.shape[-1])))
  diff = y_std.reshape(y_sur.shape) - plan.targets_std[:, None, :]
  return np.asarray(jnp.sum(jnp.square(diff), -1))


def solve(model: model_lib.Model, solver: Solver, key: Array, y_target,
          num_solutions: int, settings: SolveSettings,
          bounds: Optional[tuple[Any, Any]] = None,
          simulate: Optional[Callable[[Array], Array]] = None,
          repair: Optional[Callable[[Array], Array]] = None,
          feasible: Optional[Callable[[Array], Array]] = None) -> Solutions:
  """Designs for (M,) or (T, M) targets: draw, localize, keep the best,
  then retry the targets whose solutions missed (`retry_failures`).

  Args:
    model: a fitted model of the method of `solver`.
    solver: the method's solver.
    key: PRNG key of the draws.
    y_target: (M,) or (T, M) targets, original units.
    num_solutions: N designs per target.
    settings: from `solve_settings`.
    bounds: (lower (D,), upper (D,)) box of the boundary penalty, of the
      acceptance and of `clip_to_box`, original units (default: the
      training box).

    simulate: the task's differentiable simulator, (n, D) -> (n, M) in
      original units; used (and required) with `solve.forward='simulator'`.
    repair: the task's `repair`, (n, D) -> (n, D) in original units; used
      (and required) with `solve.repair`.
    feasible: the task's `feasible`, (n, D) original units -> (n,) bool;
      with `solve.repair` the infeasible candidates are ranked last.

  Returns:
    Solutions; leading shape (N,) for an (M,) target, (T, N) for (T, M).
    With `solve.binarize` both `x` and `x_posterior` are binary designs
    (each coordinate on a face of the box), with `solve.repair` repaired
    designs, and are ranked as such.
  """
  solver = with_route(solver, model, settings, simulate, repair, feasible)
  plan = make_plan(model, solver, y_target, num_solutions, settings, bounds)
  x_draw = draw_candidates(solver, key, plan)
  moved = localize_candidates(solver, plan, x_draw)
  sols = select_solutions(model, solver, plan, x_draw, moved)
  return retry_failures(model, solver, key, plan, sols)


__all__ = ('Draw', 'FORWARDS', 'Forward', 'Localized', 'Plan', 'SolveSettings',
           'Solutions', 'Solver', 'check_targets', 'draw_candidates',
           'localize_candidates', 'make_plan', 'retry_failures',
           'select_solutions', 'simulator_forward', 'solve', 'solve_settings',
           'with_route')
