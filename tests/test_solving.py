"""Solve settings, the ranking registry and the phases of `solving`."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ipage_jax import data as data_lib
from ipage_jax import model as model_lib
from ipage_jax import pipeline
from ipage_jax import ranking
from ipage_jax import solving


def _section(**changes):
  s = pipeline.default_config().solve
  with s.ignore_type():
    s.update(changes)
  return s


def test_settings_are_parsed_once_into_a_frozen_record():
  settings = solving.solve_settings(_section(), sampler='lhs',
                                    localize_steps=None)
  assert isinstance(settings, solving.SolveSettings)
  assert settings.sampler == 'lhs'
  assert settings.localize_steps == pipeline.default_config(
  ).solve.localize_steps  # None leaves a field as it is
  # One field per setting of the config's solve section, no more.
  assert set(settings._fields) == set(pipeline.default_config().solve.keys())
  with pytest.raises(AttributeError):
    settings.rank_by = 'diversity'


@pytest.mark.parametrize('field,value,match', [
    ('sampler', 'sobol', 'unknown sampler'),
    ('localize_steps', -1, 'localize_steps must be an integer >= 0'),
    ('localize_steps', 2.5, 'localize_steps'),
    ('localize_learning_rate', 0.0, 'localize_learning_rate must be > 0'),
    ('localize_final_learning_rate', float('nan'), 'final_learning_rate'),
    ('boundary_weight', -1.0, 'boundary_weight must be >= 0'),
    ('localize_tol', -1e-3, 'localize_tol must be >= 0'),
    ('oversample', 0.5, 'oversample must be >= 1'),
    ('clip_to_box', 'yes', 'clip_to_box must be True or False'),
    ('rank_by', 'closest', "rank_by must be one of \\('surrogate'"),
    ('accept_error', float('nan'), 'accept_error must be >= 0'),
    ('min_candidates', True, 'min_candidates must be an integer'),
    ('retries', -1, 'retries must be an integer >= 0'),
    ('retries', 1.0, 'retries must be an integer >= 0'),
    ('retries', True, 'retries must be an integer >= 0'),
])
def test_bad_settings_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    solving.solve_settings(_section(**{field: value}))


def test_unknown_and_missing_settings():
  section = _section().to_dict()
  section['rankby'] = 'diversity'
  del section['oversample']
  with pytest.raises(ValueError, match=r"unknown \['rankby'\], missing "
                     r"\['oversample'\]"):
    solving.solve_settings(ml_collections.ConfigDict(section))


def _candidates():
  """Two targets, four candidates each; candidate 3 of target 0 is not
  accepted."""
  x = jnp.asarray([[[0.0], [0.1], [5.0], [9.0]],
                   [[1.0], [2.0], [3.0], [4.0]]])
  score = jnp.asarray([[0.1, 0.2, 0.3, 0.0], [0.4, 0.3, 0.2, 0.1]])
  accepted = jnp.asarray([[True, True, True, False], [True] * 4])
  typicality = jnp.asarray([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
  return ranking.Candidates(x, score, accepted, typicality)


def test_the_registry_holds_one_rule_per_name():
  assert ranking.NAMES == ('surrogate', 'typicality', 'diversity')
  c = _candidates()
  keep = {name: np.sort(np.asarray(ranking.get(name)(c, 2)), 1).tolist()
          for name in ranking.NAMES}
  assert keep['surrogate'] == [[0, 3], [2, 3]]      # lowest scores
  assert keep['typicality'] == [[1, 2], [0, 1]]     # accepted, most typical
  assert keep['diversity'] == [[0, 2], [0, 3]]      # best, then farthest
  # Without a latent, 'typicality' ranks by score.
  plain = c._replace(typicality=None)
  np.testing.assert_array_equal(ranking.by_typicality(plain, 2),
                                ranking.by_surrogate(plain, 2))
  with pytest.raises(ValueError, match='rank_by must be one of'):
    ranking.get('closest')
  # Infeasible candidates go last, in score order among themselves.
  feasible = jnp.asarray([[False, True, True, False],
                          [False, False, False, False]])
  ranked = ranking.by_surrogate(c._replace(feasible=feasible), 4)
  by_score = np.argsort(np.asarray(c.score), 1)
  np.testing.assert_array_equal(ranked[1], by_score[1])
  assert set(np.asarray(ranked[0, :2]).tolist()) == {1, 2}
  assert np.asarray(ranked[0, 2:]).tolist() == [
      i for i in by_score[0].tolist() if i in (0, 3)]


def test_accepted_needs_the_level_set_and_the_box():
  x = jnp.asarray([[0.5, 0.5], [0.5, 0.5], [1.0005, 0.5], [1.1, 0.5]])
  ok = ranking.accepted(x, jnp.asarray([0.0, 1.0, 0.0, 0.0]), 0.5,
                        jnp.zeros(2), jnp.ones(2))
  assert np.asarray(ok).tolist() == [True, False, True, False]  # margin


def test_phases_compose_to_solve():
  """plan -> draw -> localize -> select on a linear forward model gives
  `solve`'s designs, and the plan sizes the work."""
  a = jnp.asarray([[1.0], [2.0]])
  identity = lambda d: data_lib.Standardizer(jnp.zeros(d), jnp.ones(d))
  config = pipeline.default_config()
  config.solve.oversample, config.solve.localize_steps = 2.0, 200
  config.solve.localize_learning_rate = 0.05
  config.solve.localize_final_learning_rate = 0.05
  model = model_lib.Model(
      method='linear', net=None, params=a, best_params=a,
      x_scaler=identity(2), y_scaler=identity(1),
      x_range=(-np.ones(2, np.float32), np.ones(2, np.float32)),
      y_range=(np.full(1, -3.0, np.float32), np.full(1, 3.0, np.float32)),
      config=config, history={})

  def draw(key, t, n, settings):
    del key, settings
    return jnp.broadcast_to(jnp.linspace(-0.9, 0.9, n)[None, :, None],
                            (t.shape[0], n, 2))

  solver = solving.Solver(
      draw=draw, forward=solving.Forward(lambda _, p, x: x @ p, 'lin', a))
  settings = solving.solve_settings(config.solve)
  plan = solving.make_plan(model, solver, [1.0], 3, settings)
  assert plan.num_draw == 6 and plan.single
  x0 = solving.draw_candidates(solver, None, plan)
  moved = solving.localize_candidates(solver, plan, x0)
  assert moved.steps == 200 and moved.x.shape == (6, 2)
  sols = solving.select_solutions(model, solver, plan, x0, moved)
  whole = solving.solve(model, solver, None, [1.0], 3, settings)
  np.testing.assert_array_equal(sols.x, whole.x)
  # The kept designs are on the level set: their surrogate error (x a -
  # 1)^2 is within accept_error (standardized = original units here), so
  # |x a - 1| <= sqrt(accept_error) = 1e-2, and exactly sqrt(error) up to
  # the float32 rounding of the 2-term product and difference (3 eps).
  err = np.asarray(sols.surrogate_error, np.float64)
  assert np.all(err <= config.solve.accept_error)
  resid = np.abs(np.asarray(sols.x, np.float64) @ np.asarray(a, np.float64)
                 - 1.0)[:, 0]
  np.testing.assert_allclose(resid, np.sqrt(err), rtol=0,
                             atol=3 * np.finfo(np.float32).eps * 3.0)
  assert sols.gradient_steps_per_solution == 200 * 6 / 3
  with pytest.raises(ValueError, match='num_solutions'):
    solving.make_plan(model, solver, [1.0], 0, settings)
  with pytest.raises(ValueError, match='needs a forward model'):
    solving.make_plan(model, solver._replace(forward=None), [1.0], 3,
                      settings)


# Retries. A 1-D surrogate f(x) = x^3 - 3x (identity scalers, box [-3, 3])
# and the target 2.5: the loss (f - 2.5)^2 has its only root at x* ~ 2.04
# (f(2) = 2 < 2.5 < f(2.1)) and a local minimum at x = -1 (the local maximum
# f(-1) = 2 < 2.5), of loss 0.25. Since f < 2.5 left of x*, descent follows
# f' and moves x0 > 1 (right of f's local minimum at 1) to x*, and x0 < 1
# to -1, where it stays: a target is solved iff a start lies right of 1.
_CUBIC_STEPS = 300
_LOW, _HIGH = -2.5, 2.5  # the uniform starts


def _cubic(_, p, x):
  del p
  return x ** 3 - 3.0 * x


def _cubic_model(**solve):
  identity = lambda d: data_lib.Standardizer(jnp.zeros(d), jnp.ones(d))
  config = pipeline.default_config()
  config.solve.localize_steps = _CUBIC_STEPS
  config.solve.localize_learning_rate = 0.05
  config.solve.localize_final_learning_rate = 1e-4
  config.solve.update(solve)
  model = model_lib.Model(
      method='cubic', net=None, params=None, best_params=None,
      x_scaler=identity(1), y_scaler=identity(1),
      x_range=(np.full(1, -3.0, np.float32), np.full(1, 3.0, np.float32)),
      y_range=(np.full(1, -20.0, np.float32), np.full(1, 20.0, np.float32)),
      config=config, history={})
  return model


def _uniform_draw(key, t, n, settings):
  del settings
  return jax.random.uniform(key, (t.shape[0], n, 1), minval=_LOW,
                            maxval=_HIGH)


_CUBIC_SOLVER = solving.Solver(
    draw=_uniform_draw, forward=solving.Forward(_cubic, 'cubic', None))
_KEY = jax.random.PRNGKey(1)
_TARGETS = np.full((8, 1), 2.5, np.float32)


def _solve(num_solutions=1, solver=_CUBIC_SOLVER, **solve):
  model = _cubic_model(**solve)
  settings = solving.solve_settings(model.config.solve)
  return solving.solve(model, solver, _KEY, _TARGETS, num_solutions,
                       settings)


def _assert_same(a, b, rows=slice(None)):
  for name in ('x', 'x_posterior', 'y_surrogate', 'surrogate_error'):
    np.testing.assert_array_equal(getattr(a, name)[rows],
                                  getattr(b, name)[rows])


def test_no_retries_is_the_first_pass():
  """retries=0: `solve` is the composition of the four phases, bitwise;
  and a retry round with no failing target changes nothing."""
  model = _cubic_model(oversample=2.0)
  settings = solving.solve_settings(model.config.solve)
  assert settings.retries == 0
  plan = solving.make_plan(model, _CUBIC_SOLVER, _TARGETS, 1, settings)
  x0 = solving.draw_candidates(_CUBIC_SOLVER, _KEY, plan)
  first = solving.select_solutions(
      model, _CUBIC_SOLVER, plan, x0,
      solving.localize_candidates(_CUBIC_SOLVER, plan, x0))
  whole = _solve(oversample=2.0)
  _assert_same(whole, first)
  assert whole.gradient_steps_per_solution == (
      first.gradient_steps_per_solution)
  none_fail = _solve(oversample=2.0, retries=1, accept_error=1.0)
  _assert_same(none_fail, first)
  assert none_fail.gradient_steps_per_solution == _CUBIC_STEPS * 2


def _solved(err):
  return err <= 1e-4  # the default accept_error (standardized = original)


def _assert_at_root(x):
  """x (n, 1) on the level set |f(x) - 2.5| <= 1e-2 of the root x*, so
  |x - x*| <= 1e-2 / f'(x*) to first order, f'(x*) = 3 x*^2 - 3 ~ 9.65."""
  roots = np.roots([1.0, 0.0, -3.0, -2.5])
  x_star = roots[np.argmin(np.abs(roots.imag))].real
  np.testing.assert_allclose(x, np.full_like(x, x_star),
                             atol=1.1e-2 / (3 * x_star ** 2 - 3))


def test_a_retry_rescues_the_stuck_targets_only():
  """Targets with both starts left of 1 stall at -1 (error 0.25); one
  retry draws two new starts for them (key fold_in(key, 1)) and keeps
  x* where a new start lies right of 1. Solved targets are untouched."""
  first = _solve(oversample=2.0)
  failing = ~_solved(first.surrogate_error[:, 0])
  # Every first-pass start decides its target, as the analysis says.
  right = first.x_posterior[:, 0, 0] > 1.0
  np.testing.assert_array_equal(failing, ~right)  # kept: a right start
  starts = np.asarray(_uniform_draw(_KEY, _TARGETS, 2, None))[..., 0]
  np.testing.assert_array_equal(failing, np.all(starts < 1.0, 1))
  np.testing.assert_allclose(first.surrogate_error[failing, 0], 0.25,
                             rtol=1e-3)
  assert 0 < failing.sum() < len(failing)

  retried = _solve(oversample=2.0, retries=1)
  _assert_same(retried, first, ~failing)  # bitwise
  new = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 1),
                                 _TARGETS[failing], 2, None))[..., 0]
  rescued = np.any(new > 1.0, 1)
  assert rescued.any() and not rescued.all()  # both cases occur
  err = retried.surrogate_error[failing, 0]
  assert np.all(_solved(err[rescued]))
  _assert_at_root(retried.x[failing][rescued, 0])
  # The replacement's posterior sample is the new start it came from.
  post = retried.x_posterior[failing][rescued, 0, 0]
  assert np.all(np.any(post[:, None] == new[rescued], 1))
  # Still stuck: an error of 0.25, either the old or an equal new one.
  np.testing.assert_allclose(err[~rescued], 0.25, rtol=1e-3)
  assert np.all(err <= first.surrogate_error[failing, 0])
  # Work: 2 starts x 300 steps per target; then again for the F failing
  # targets of 8, averaged over all 8 solutions.
  f = int(failing.sum())
  assert first.gradient_steps_per_solution == 600
  assert retried.gradient_steps_per_solution == 600 + 600 * f / 8
  # A second round retries the targets the first one left stuck.
  twice = _solve(oversample=2.0, retries=2)
  left = int(np.sum(~_solved(retried.surrogate_error[:, 0])))
  assert left == np.sum(~rescued) and left > 0
  assert twice.gradient_steps_per_solution == (
      600 + 600 * f / 8 + 600 * left / 8)
  _assert_same(twice, retried, _solved(retried.surrogate_error[:, 0]))
  new2 = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 2),
                                  _TARGETS[:left], 2, None))[..., 0]
  assert np.sum(~_solved(twice.surrogate_error)) == left - np.sum(
      np.any(new2 > 1.0, 1))
  # A method that does not localize ignores retries (as oversampling).
  drawn = _CUBIC_SOLVER._replace(localize=False)
  _assert_same(_solve(solver=drawn, retries=2), _solve(solver=drawn))


def test_retries_replace_the_failing_solutions_of_a_target():
  """N = 2 per target: a target's solved solutions stay; its failing ones
  are replaced by the new solved ones (the worst failing by the best new),
  so a target ends with min(2, solved before + solved new) solved ones."""
  first = _solve(num_solutions=2)  # 2 draws per target, both kept
  solved = _solved(first.surrogate_error)
  failing = ~solved.all(1)
  assert solved.any(1)[failing].any() and not solved.any(1)[failing].all()
  retried = _solve(num_solutions=2, retries=1)
  for name in ('x', 'x_posterior', 'y_surrogate', 'surrogate_error'):
    np.testing.assert_array_equal(getattr(retried, name)[solved],
                                  getattr(first, name)[solved])
  new = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 1),
                                 _TARGETS[failing], 2, None))[..., 0]
  want = np.minimum(2, solved[failing].sum(1) + (new > 1.0).sum(1))
  got = _solved(retried.surrogate_error[failing]).sum(1)
  np.testing.assert_array_equal(got, want)
  assert np.any(want > solved[failing].sum(1))
  assert retried.gradient_steps_per_solution == (
      300 + 300 * failing.sum() / 8)
  assert retried.x.shape == first.x.shape == (8, 2, 1)
  # One (M,) target: leading shape (N,), as without retries.
  model = _cubic_model(retries=1, accept_error=0.0)
  one = solving.solve(model, _CUBIC_SOLVER, _KEY, [2.5], 2,
                      solving.solve_settings(model.config.solve))
  assert one.x.shape == one.x_posterior.shape == (2, 1)
  assert one.surrogate_error.shape == (2,) and one.y_target.shape == (1,)


def test_retries_resolve_only_the_failing_solutions_of_a_target():
  """One target, N = 8: a retry solves it again for its K failing
  solutions only (K new starts: no oversampling here) and replaces them
  by the new solved ones, for 300 (8 + K) / 8 steps per solution."""
  model = _cubic_model(retries=1)
  settings = solving.solve_settings(model.config.solve)
  first = solving.solve(model, _CUBIC_SOLVER, _KEY, [2.5], 8,
                        settings._replace(retries=0))
  solved = _solved(first.surrogate_error)
  k = int(np.sum(~solved))
  assert 0 < k < 8
  sols = solving.solve(model, _CUBIC_SOLVER, _KEY, [2.5], 8, settings)
  _assert_same(sols, first, solved)
  new = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 1),
                                 _TARGETS[:1], k, None))[0, :, 0]
  assert 0 < np.sum(new > 1.0) < k
  assert np.sum(_solved(sols.surrogate_error)) == 8 - k + np.sum(new > 1.0)
  assert sols.gradient_steps_per_solution == 300 * (8 + k) / 8


def test_retries_replace_the_solutions_outside_the_design_space():
  """Design space x > 0 (`Solver.feasible`), accept_error 1 (the stalled
  error 0.25 passes): a target whose two starts both stalled at -1 keeps
  an infeasible solution, which fails; a retry replaces it by x* where a
  new start lies right of 1, and leaves the other targets bit for bit."""
  solver = _CUBIC_SOLVER._replace(feasible=lambda x: x[:, 0] > 0.0)
  first = _solve(oversample=2.0, accept_error=1.0, solver=solver)
  starts = np.asarray(_uniform_draw(_KEY, _TARGETS, 2, None))[..., 0]
  stalled = np.all(starts < 1.0, 1)
  assert 0 < stalled.sum() < len(stalled)
  # Ranking keeps a feasible candidate where there is one.
  np.testing.assert_array_equal(first.x[:, 0, 0] > 0, ~stalled)
  # Without a design space no solution fails at accept_error 1.
  plain = _solve(oversample=2.0, accept_error=1.0, retries=1)
  assert plain.gradient_steps_per_solution == 600
  retried = _solve(oversample=2.0, accept_error=1.0, retries=1,
                   solver=solver)
  _assert_same(retried, first, ~stalled)
  new = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 1),
                                 _TARGETS[stalled], 2, None))[..., 0]
  rescued = np.any(new > 1.0, 1)
  assert rescued.any() and not rescued.all()
  np.testing.assert_array_equal(retried.x[stalled, 0, 0] > 0, rescued)
  _assert_at_root(retried.x[stalled][rescued, 0])
  assert retried.gradient_steps_per_solution == 600 + 600 * stalled.sum() / 8


def test_a_feasible_retry_replaces_a_more_accurate_infeasible_solution():
  """Design space x < 0: the root x* (error 0) is infeasible, the stalled
  point -1 (error 0.25) feasible. Feasibility comes first, in ranking and
  in retries: a target solved at x* in the first pass (both starts right
  of 1) gets -1 from a retry where a new start lies left of 1."""
  solver = _CUBIC_SOLVER._replace(feasible=lambda x: x[:, 0] < 0.0)
  first = _solve(oversample=2.0, solver=solver)
  starts = np.asarray(_uniform_draw(_KEY, _TARGETS, 2, None))[..., 0]
  at_root = np.all(starts > 1.0, 1)
  np.testing.assert_array_equal(first.x[:, 0, 0] > 0, at_root)
  retried = _solve(oversample=2.0, retries=1, solver=solver)
  # Every target fails (inaccurate at -1 or infeasible at x*) and retries,
  # in the order of the first pass's targets.
  new = np.asarray(_uniform_draw(jax.random.fold_in(_KEY, 1), _TARGETS, 2,
                                 None))[..., 0]
  moved = at_root & np.any(new < 1.0, 1)
  assert moved.any()
  np.testing.assert_allclose(retried.x[moved, 0, 0], -1.0, atol=1e-2)
  # The others stay at -1 (a new stalled point replaces the old one only
  # where its error is lower).
  np.testing.assert_allclose(retried.x[~at_root, 0, 0], -1.0, atol=1e-2)
  assert np.all(retried.surrogate_error[~at_root]
                <= first.surrogate_error[~at_root])


def test_retries_run_through_the_chunked_localization():
  """With `parallel.localize_chunk` the first pass and the retries run in
  chunks of 3 rows (padded, up to float rounding the same rows): the same
  targets are rescued from the same starts, onto the level set, the
  others stay stuck, and the work counts the same."""
  model = _cubic_model(oversample=2.0, retries=1)
  model.config.parallel.localize_chunk = 3
  settings = solving.solve_settings(model.config.solve)
  chunked = solving.solve(model, _CUBIC_SOLVER, _KEY, _TARGETS, 1, settings)
  whole = _solve(oversample=2.0, retries=1)
  solved = _solved(whole.surrogate_error[:, 0])
  assert solved.any() and not solved.all()
  np.testing.assert_array_equal(_solved(chunked.surrogate_error[:, 0]),
                                solved)
  np.testing.assert_array_equal(chunked.x_posterior, whole.x_posterior)
  np.testing.assert_allclose(chunked.surrogate_error[~solved], 0.25,
                             rtol=1e-3)
  assert chunked.gradient_steps_per_solution == (
      whole.gradient_steps_per_solution)
