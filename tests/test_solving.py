"""Solve settings, the ranking registry and the phases of `solving`."""

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
