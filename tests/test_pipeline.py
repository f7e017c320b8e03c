"""fit / solve: shapes, units, batching over targets, determinism, errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import methods
from ipage_jax import pipeline
from ipage_jax import ranking
from ipage_jax import solving

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def model():
  """A small model on y = x1 + x2 with x in a box far from the origin, so
  that unit handling (standardization) matters."""
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(key, (512, 2), minval=10.0, maxval=20.0)
  y = (x[:, :1] + x[:, 1:]) * 100.0
  c = pipeline.default_config()
  c.model.width = 4
  c.model.num_blocks = 2
  c.model.hidden = 32
  c.train.epochs = 30
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.solve.localize_steps = 300
  c.solve.localize_learning_rate = 2e-2
  return pipeline.fit(key, np.asarray(x), np.asarray(y), c)


def _drawn_std(model, s, key, target, num):
  """The (num, D) standardized candidates `solve` draws for one target: the
  solver's compiled draw on the same float32 standardized target, so the
  same program on the same inputs (bitwise equal); what solve keeps of
  them is then a gather, checked exactly."""
  t_std = model.y_scaler.forward(jnp.array([[target]]))
  settings = solving.solve_settings(s, sampler='lhs')
  return pipeline.solver(model).draw(key, t_std, num, settings)[0]


def _y_sur(model, x_std):
  """The surrogate as solve ranks with it: on the standardized designs."""
  return np.asarray(model.y_scaler.inverse(pipeline.forward_y(
      model.net, model.best_params, jnp.asarray(x_std))))


def _surrogate_error(model, n=1024):
  """Mean |surrogate - exact map| over n uniform draws in the data box,
  the exact 100 (x1 + x2) in float64, and its standard error."""
  x = np.random.default_rng(0).uniform(10.0, 20.0, (n, 2)).astype(np.float32)
  err = np.abs(np.asarray(pipeline.surrogate(model, jnp.asarray(x)),
                          np.float64)[:, 0]
               - 100.0 * x.astype(np.float64).sum(-1))
  return err.mean(), err.std(ddof=1) / np.sqrt(n)


def _round_trip_tol(scaler, a):
  """|inverse(forward(a)) - a| of a Standardizer in float32: a - m, / s,
  * s and + m round by eps / 2 each, the first three of |a - m| and the
  last of |a|: <= 2 eps |a - m| + eps |a|."""
  a = np.asarray(a, np.float64)
  return EPS32 * (2 * np.abs(a - np.asarray(scaler.mean)) + np.abs(a))


def test_solve_one_target_in_original_units(model):
  sols = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 64)
  assert sols.x.shape == (64, 2)
  assert sols.x_posterior.shape == (64, 2)
  assert sols.y_surrogate.shape == (64, 1)
  assert sols.surrogate_error.shape == (64,)
  np.testing.assert_array_equal(sols.y_target, [3000.0])  # float32 exact
  # Designs live in the data box (boundary penalty), in original units.
  assert np.all(sols.x > 9.0) and np.all(sols.x < 21.0)
  # Localization drives the surrogate to the target, every row to within
  # the surrogate's own accuracy (its mean error against the exact map on
  # the data box, 4 standard errors below the estimate): beyond that the
  # residual no longer dominates the true error ...
  mae, se = _surrogate_error(model)
  residual = np.abs(sols.y_surrogate[:, 0].astype(np.float64) - 3000.0)
  assert residual.max() < mae - 4 * se
  # The same float32 subtraction and square (M = 1: no sum): exact.
  np.testing.assert_array_equal(
      sols.surrogate_error, np.sum((sols.y_surrogate - 3000.0) ** 2, -1))
  # ... and the true map agrees up to the surrogate's error (x1 + x2 = 30):
  # |y - y*| <= residual + |surrogate - y|, on average no worse than on
  # the box (4 standard errors above the estimate), i.e. localization did
  # not seek out points where the surrogate is wrong.
  true_y = 100.0 * sols.x.astype(np.float64).sum(-1)
  assert np.mean(np.abs(true_y - 3000.0)) < residual.max() + mae + 4 * se
  # Solutions spread along the line x1 + x2 = 30, not one point: the exact
  # posterior (the uniform prior on the segment in the box) has std
  # 10 / sqrt(12) = 2.9 in x1; the INN trained for 30 epochs is narrower,
  # and the check asks only for a third of it.
  assert np.std(sols.x[:, 0]) > 1.0


def test_solve_many_targets_batched(model):
  targets = np.array([[2600.0], [3000.0], [3400.0]])
  sols = pipeline.solve(model, jax.random.PRNGKey(2), targets, 16)
  assert sols.x.shape == (3, 16, 2)
  assert sols.y_surrogate.shape == (3, 16, 1)
  # Each target's mean surrogate value within the surrogate's own accuracy
  # of the target (as in test_solve_one_target_in_original_units).
  mae, se = _surrogate_error(model)
  np.testing.assert_allclose(sols.y_surrogate[..., 0].mean(-1),
                             targets[:, 0], rtol=0, atol=mae - 4 * se)


def test_solve_is_a_function_of_the_key(model):
  a = pipeline.solve(model, jax.random.PRNGKey(5), [3000.0], 8, 'lhs')
  b = pipeline.solve(model, jax.random.PRNGKey(5), [3000.0], 8, 'lhs')
  c = pipeline.solve(model, jax.random.PRNGKey(6), [3000.0], 8, 'lhs')
  np.testing.assert_array_equal(a.x, b.x)
  assert not np.allclose(a.x, c.x)


def test_without_localization_returns_posterior(model):
  sols = pipeline.solve(model, jax.random.PRNGKey(3), [3000.0], 8,
                        localize=False)
  np.testing.assert_array_equal(sols.x, sols.x_posterior)


def test_target_checks(model):
  with pytest.raises(ValueError, match=r'shape \(1,\)'):
    pipeline.solve(model, jax.random.PRNGKey(0), [1.0, 2.0], 4)
  with pytest.raises(ValueError, match='NaN'):
    pipeline.solve(model, jax.random.PRNGKey(0), [np.nan], 4)
  with pytest.raises(ValueError, match='num_solutions'):
    pipeline.solve(model, jax.random.PRNGKey(0), [3000.0], 0)
  with pytest.warns(UserWarning, match='outside the training data range'):
    pipeline.solve(model, jax.random.PRNGKey(0), [99999.0], 4)


def test_save_and_load_round_trip(model, tmp_path):
  path = str(tmp_path / 'model')
  methods.save_model(path, model)
  loaded = methods.load_model(path)
  x = jnp.array([[12.0, 15.0], [19.0, 11.0]])
  np.testing.assert_array_equal(pipeline.surrogate(loaded, x),
                                pipeline.surrogate(model, x))
  np.testing.assert_array_equal(loaded.x_range[0], model.x_range[0])
  assert loaded.config.train.epochs == model.config.train.epochs
  np.testing.assert_array_equal(loaded.history['val_loss'],
                                model.history['val_loss'])
  with pytest.raises(ValueError, match='checkpoint'):
    methods.load_model(str(tmp_path / 'missing'))


def test_bad_width_raises():
  c = pipeline.default_config()
  c.model.width = 1
  with pytest.raises(ValueError, match='width'):
    pipeline.build_inn(c, 2, 1)


def test_latent_moments_and_the_warning_of_a_poor_latent(model, monkeypatch):
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (64, 2),
                                    minval=10.0, maxval=20.0))
  mean, std = pipeline.latent_moments(model, x)
  # Independently: pad the standardized x with zeros, run the network, take
  # the columns after y.
  x_std = (x - np.asarray(model.x_scaler.mean)) / np.asarray(
      model.x_scaler.scale)
  padded = np.zeros((64, model.net.width), np.float32)
  padded[:, :2] = x_std
  out = np.asarray(model.net.apply(model.params, jnp.asarray(padded))[0],
                   np.float64)
  z = out[:, 1:1 + model.net.z_dim]
  # The same float32 network, compiled there and eager here: fusion and FMA
  # contraction may change every rounding, 8 eps at the scale of the values
  # per affine map (2 per GLOW block; tests/test_flows.py), which moves
  # the float64 mean and (1-Lipschitz in the largest entry) std by as much.
  tol = 16 * model.net.num_blocks * EPS32 * np.abs(z).max()
  np.testing.assert_allclose(mean, z.mean(0), rtol=0, atol=tol)
  np.testing.assert_allclose(std, z.std(0), rtol=0, atol=tol)

  c = model.config.copy_and_resolve_references()
  c.train.epochs, c.train.batch_size = 1, 16
  y = (x[:, :1] + x[:, 1:]) * 100.0
  monkeypatch.setattr(pipeline, 'LATENT_MAX_MEAN', -1.0)  # any latent fails
  with pytest.warns(RuntimeWarning, match='far from N'):
    pipeline.fit(jax.random.PRNGKey(0), x, y, c)
  monkeypatch.setattr(pipeline, 'LATENT_MAX_MEAN', np.inf)
  monkeypatch.setattr(pipeline, 'LATENT_STD_RANGE', (0.0, np.inf))
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    pipeline.fit(jax.random.PRNGKey(0), x, y, c)


def test_typicality_ranking_keeps_low_latent_norm_on_the_level_set(model):
  """rank_by='typicality': of 3N drawn (no localization steps), the kept N
  are the accepted candidates (standardized surrogate error <= accept_error)
  with the smallest ||z||^2, then the rest by surrogate error."""
  s = model.config.solve.copy_and_resolve_references()
  s.oversample, s.rank_by = 3.0, 'typicality'
  key, n, target = jax.random.PRNGKey(5), 8, 3000.0
  drawn_std = _drawn_std(model, s, key, target, 3 * n)
  drawn = np.asarray(model.x_scaler.inverse(drawn_std))
  y_sur = np.asarray(_y_sur(model, drawn_std), np.float64)
  err_std = ((y_sur[:, 0] - target) / float(model.y_scaler.scale[0])) ** 2
  # Latent norm from the raw network output: columns [y_dim, y_dim + z_dim).
  padded = np.zeros((3 * n, model.net.width), np.float32)
  padded[:, :2] = np.asarray(drawn_std)
  out = np.asarray(model.net.apply(model.params, jnp.asarray(padded))[0])
  z_norm = np.sum(out[:, 1:1 + model.net.z_dim] ** 2, -1)
  s.accept_error = float(np.quantile(err_std, 0.75))  # 18 of 24 accepted
  accepted = err_std <= s.accept_error
  order = sorted(range(3 * n), key=lambda i: (
      not accepted[i], z_norm[i] if accepted[i] else err_std[i]))
  # The test discriminates: by surrogate error alone another set is kept.
  assert set(order[:n]) != set(np.argsort(err_std)[:n])
  sols = pipeline.solve(model, key, [target], n, 'lhs', steps=0,
                        learning_rate=1e-3, solve_config=s)
  np.testing.assert_array_equal(sols.x, drawn[np.sort(order[:n])])
  s.rank_by = 'closest'
  with pytest.raises(ValueError, match="one of \\('surrogate'"):
    pipeline.solve(model, key, [target], n, solve_config=s)
  s.rank_by, s.accept_error = 'typicality', -1.0
  with pytest.raises(ValueError, match='accept_error'):
    pipeline.solve(model, key, [target], n, solve_config=s)


def _greedy_farthest(x, score, accepted, k):
  """Reference: the farthest-point rule written as plain Python loops."""
  chosen = []
  for _ in range(k):
    open_acc = [i for i in range(len(x)) if accepted[i] and i not in chosen]
    if not open_acc:
      rest = [i for i in range(len(x)) if i not in chosen]
      chosen.append(min(rest, key=lambda i: score[i]))
      continue
    def spread(i):
      return min((float(np.sum((x[i] - x[j]) ** 2)) for j in chosen),
                 default=np.inf)
    chosen.append(min(open_acc, key=lambda i: (-spread(i), score[i])))
  return chosen


def test_diverse_subset_matches_the_farthest_point_rule():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 3)).astype(np.float32)
  score = rng.uniform(size=40).astype(np.float32)
  accepted = rng.uniform(size=40) < 0.6
  for k in (1, 7, int(accepted.sum()), 30):  # 30: past the accepted ones
    got = ranking.diverse_subset(jnp.asarray(x), jnp.asarray(score),
                                  jnp.asarray(accepted), num_keep=k)
    assert list(np.asarray(got)) == _greedy_farthest(x, score, accepted, k)


def test_diversity_ranking_keeps_one_design_per_cluster():
  """Four tight clusters, the best-scored one holding most candidates: by
  score the kept four come from one cluster, by diversity one from each."""
  centers = np.array([[0, 0], [5, 0], [0, 5], [5, 5]], np.float32)
  rng = np.random.default_rng(1)
  label = np.array([0] * 10 + [1, 2, 3] * 2)
  x = centers[label] + 0.01 * rng.normal(size=(16, 2)).astype(np.float32)
  score = np.where(label == 0, 0.0, 1.0) + 0.1 * rng.uniform(size=16)
  got = np.asarray(ranking.diverse_subset(
      jnp.asarray(x), jnp.asarray(score, jnp.float32),
      jnp.ones(16, bool), num_keep=4))
  assert sorted(label[got]) == [0, 1, 2, 3]
  assert label[got[0]] == 0 and score[got[0]] == score[label == 0].min()
  assert set(label[np.argsort(score)[:4]]) == {0}


def test_solve_with_diversity_ranking(model):
  """rank_by='diversity' on 3N candidates (no localization steps): the kept
  N are the farthest-point choice among the accepted (on the level set and
  inside the box), in standardized x; then the rest by surrogate error."""
  s = model.config.solve.copy_and_resolve_references()
  s.oversample, s.rank_by = 3.0, 'diversity'
  key, n, target = jax.random.PRNGKey(5), 8, 3000.0
  drawn_std = np.asarray(_drawn_std(model, s, key, target, 3 * n))
  drawn = np.asarray(model.x_scaler.inverse(jnp.asarray(drawn_std)))
  y_sur = np.asarray(_y_sur(model, drawn_std), np.float64)
  err = (y_sur[:, 0] - target) ** 2
  err_std = err / float(model.y_scaler.scale[0]) ** 2
  s.accept_error = float(np.quantile(err_std, 0.75))
  # A box that leaves out the drawn designs with the largest x1.
  lower = drawn.min(0) - 1.0
  upper = np.array([np.quantile(drawn[:, 0], 0.8), drawn[:, 1].max() + 1.0])
  inside = np.all(drawn <= upper, 1)
  accepted = (err_std <= s.accept_error) & inside
  assert np.any((err_std <= s.accept_error) & ~inside)  # the box matters
  expected = _greedy_farthest(drawn_std, err, accepted, n)
  assert set(expected) != set(np.argsort(err)[:n])  # the test discriminates
  sols = pipeline.solve(model, key, [target], n, 'lhs', steps=0,
                        learning_rate=1e-3, solve_config=s,
                        bounds=(lower, upper))
  np.testing.assert_array_equal(sols.x, drawn[np.sort(expected)])


def test_min_candidates_sets_the_diversity_pool(model):
  """With rank_by='diversity', N > 1 solutions come from max(oversample N,
  min_candidates) candidates (gradient evaluations say how many); one
  solution, or another ranking, ignores min_candidates."""
  s = model.config.solve.copy_and_resolve_references()
  s.oversample, s.min_candidates, s.localize_steps = 1.0, 20, 3
  for rank_by, n, pool in (('diversity', 4, 20), ('diversity', 1, 1),
                           ('surrogate', 4, 4), ('diversity', 30, 30)):
    s.rank_by = rank_by
    sols = pipeline.solve(model, jax.random.PRNGKey(0), [3000.0], n,
                          solve_config=s)
    assert sols.x.shape == (n, 2)
    assert sols.gradient_steps_per_solution == 3 * pool / n
  for bad in (-1, 2.5, True):
    with s.ignore_type():
      s.min_candidates = bad
    with pytest.raises(ValueError, match='min_candidates'):
      pipeline.solve(model, jax.random.PRNGKey(0), [3000.0], 4,
                     solve_config=s)


def test_localize_tol_stops_candidates_on_the_level_set(model):
  """solve.localize_tol: candidates whose standardized squared surrogate
  error is already below it are returned unmoved, the loop stops early and
  the gradient count says so; a negative tolerance is refused."""
  s = model.config.solve.copy_and_resolve_references()
  s.localize_steps, s.localize_learning_rate = 300, 1e-2
  s.localize_final_learning_rate = 1e-2
  key = jax.random.PRNGKey(3)
  free = pipeline.solve(model, key, [3000.0], 16, 'lhs', solve_config=s)
  s.localize_tol = 1e6  # every candidate is within it from the start
  held = pipeline.solve(model, key, [3000.0], 16, 'lhs', solve_config=s)
  np.testing.assert_array_equal(held.x, held.x_posterior)
  assert held.gradient_steps_per_solution == 0
  assert free.gradient_steps_per_solution == 300
  assert np.abs(free.x - free.x_posterior).max() > 0
  s.localize_tol = 1e-3
  some = pipeline.solve(model, key, [3000.0], 16, 'lhs', solve_config=s)
  err_std = some.surrogate_error / float(model.y_scaler.scale[0]) ** 2
  assert some.gradient_steps_per_solution < 300
  assert np.all(err_std < 1e-3)
  s.localize_tol = -1.0
  with pytest.raises(ValueError, match='localize_tol'):
    pipeline.solve(model, key, [3000.0], 4, solve_config=s)


def test_oversample_keeps_the_best_by_surrogate_error(model):
  """With no localization steps, oversampling must return exactly the N
  posterior samples (of 2N drawn) with the lowest surrogate error."""
  s = model.config.solve.copy_and_resolve_references()
  s.oversample = 2.0
  key, n = jax.random.PRNGKey(4), 8
  sols = pipeline.solve(model, key, [3000.0], n, 'lhs', steps=0,
                        learning_rate=1e-3, solve_config=s)
  drawn_std = _drawn_std(model, s, key, 3000.0, 2 * n)
  drawn = np.asarray(model.x_scaler.inverse(drawn_std))
  # The code's own float32 error of each candidate (same eager operations).
  err = np.sum((_y_sur(model, drawn_std) - np.float32(3000.0)) ** 2, -1)
  kept = np.sort(np.argsort(err)[:n])
  # Kept rows are gathered: exact.
  np.testing.assert_array_equal(sols.x, drawn[kept])
  np.testing.assert_array_equal(sols.x_posterior, drawn[kept])
  np.testing.assert_array_equal(sols.surrogate_error, err[kept])
  # Without localization the samples come as drawn: no ranking, no extra.
  plain = pipeline.solve(model, key, [3000.0], n, 'lhs', localize=False,
                         solve_config=s)
  first = _drawn_std(model, s, key, 3000.0, n)
  np.testing.assert_array_equal(plain.x, model.x_scaler.inverse(first))
  s.oversample = 0.5
  with pytest.raises(ValueError, match='oversample'):
    pipeline.solve(model, key, [3000.0], n, solve_config=s)


def test_retries_redraw_the_posterior_of_the_failing_targets(model):
  """accept_error=0 fails every target; one retry draws each a fresh
  posterior sample (key fold_in(key, 1), all targets at once) and keeps,
  per target, the one of lower surrogate error (no localization here, so
  the candidates are the solver's draws, gathered exactly)."""
  s = model.config.solve.copy_and_resolve_references()
  s.accept_error, s.retries = 0.0, 1
  key = jax.random.PRNGKey(7)
  targets = np.array([[2600.0], [3000.0], [3400.0], [2800.0]], np.float32)
  sols = pipeline.solve(model, key, targets, 1, 'lhs', steps=0,
                        learning_rate=1e-3, solve_config=s)
  settings = solving.solve_settings(s, sampler='lhs')
  t_std = model.y_scaler.forward(jnp.asarray(targets))
  draws = [pipeline.solver(model).draw(k, t_std, 1, settings)[:, 0]
           for k in (key, jax.random.fold_in(key, 1))]  # (T, D) each
  err = [np.sum((_y_sur(model, d) - targets) ** 2, -1) for d in draws]
  newer = err[1] < err[0]
  assert 0 < newer.sum() < len(targets)  # both outcomes occur
  old, new = (np.asarray(model.x_scaler.inverse(d)) for d in draws)
  want = np.where(newer[:, None], new, old)
  np.testing.assert_array_equal(sols.x[:, 0], want)
  np.testing.assert_array_equal(sols.x_posterior[:, 0], want)
  np.testing.assert_array_equal(sols.surrogate_error[:, 0],
                                np.minimum(*err))


def test_clip_to_box_ranks_the_projected_candidates(model):
  """solve.clip_to_box: the drawn candidates are clipped to the box before
  the surrogate ranks them (numpy reference on the same draws), localized
  designs are clipped again, and without it designs may leave the box."""
  s = model.config.solve.copy_and_resolve_references()
  s.oversample, s.clip_to_box = 2.0, True
  key, n, target = jax.random.PRNGKey(7), 8, 3000.0
  drawn_std = np.asarray(_drawn_std(model, s, key, target, 2 * n))
  drawn = np.asarray(model.x_scaler.inverse(jnp.asarray(drawn_std)))
  # A box that cuts through the drawn designs in both coordinates.
  lower = np.quantile(drawn, 0.2, axis=0).astype(np.float32)
  upper = np.quantile(drawn, 0.8, axis=0).astype(np.float32)
  # Clipped as solve clips: in standardized units, on the standardized box.
  lo_std, hi_std = (np.asarray(model.x_scaler.forward(jnp.asarray(b)[None]))[0]
                    for b in (lower, upper))
  clipped_std = np.clip(drawn_std, lo_std, hi_std)
  clipped = np.asarray(model.x_scaler.inverse(jnp.asarray(clipped_std)))
  assert not np.allclose(clipped, drawn)  # the box matters
  err = np.sum((_y_sur(model, clipped_std) - np.float32(target)) ** 2, -1)
  best = clipped[np.sort(np.argsort(err)[:n])]
  sols = pipeline.solve(model, key, [target], n, 'lhs', steps=0,
                        learning_rate=1e-3, solve_config=s,
                        bounds=(lower, upper))
  # The same clip and inverse on the same floats, then a gather: exact.
  np.testing.assert_array_equal(sols.x, best)
  np.testing.assert_array_equal(sols.x_posterior, best)
  # Localized with a large step and no boundary penalty: still in the box.
  s.boundary_weight, s.localize_steps = 0.0, 50
  s.localize_learning_rate = s.localize_final_learning_rate = 0.5
  moved = pipeline.solve(model, key, [target], n, 'lhs', solve_config=s,
                         bounds=(lower, upper))
  # A box face in standardized units comes back within the scaler's round
  # trip of the face in original units.
  tol = np.maximum(_round_trip_tol(model.x_scaler, lower),
                   _round_trip_tol(model.x_scaler, upper))
  assert np.all(moved.x >= lower - tol) and np.all(moved.x <= upper + tol)
  s.clip_to_box = False
  free = pipeline.solve(model, key, [target], n, 'lhs', solve_config=s,
                        bounds=(lower, upper))
  assert np.any(free.x < lower - tol) or np.any(free.x > upper + tol)
  with s.ignore_type():
    s.clip_to_box = 'yes'
  with pytest.raises(ValueError, match='clip_to_box'):
    pipeline.solve(model, key, [target], n, solve_config=s)


def _true_sum(x):
  """The exact forward process of the `model` fixture, original units."""
  return (x[:, :1] + x[:, 1:]) * 100.0


def test_simulator_route_localizes_through_the_true_process(model):
  settings = model.config.solve.copy_and_resolve_references()
  settings.forward = 'simulator'
  sols = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 32,
                        solve_config=settings, simulate=_true_sum)
  # The forward model is the simulator: its output at x is what is reported,
  # and Adam on the exact map takes nearly every row to the target (a row
  # that starts outside the box also has the boundary penalty to descend).
  # Reported y is the simulator at the same float32 x through the y
  # scaler's round trip (forward for the loss, inverse for the report).
  y_true = np.asarray(_true_sum(jnp.asarray(sols.x)))
  assert np.all(np.abs(sols.y_surrogate - y_true)
                <= _round_trip_tol(model.y_scaler, y_true))
  assert np.mean(np.abs(sols.y_surrogate[:, 0] - 3000.0) < 1.0) >= 0.9
  surrogate = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 32)
  true_err = lambda s: np.mean((np.asarray(_true_sum(jnp.asarray(s.x)))
                                - 3000.0) ** 2)
  assert true_err(sols) < 0.1 * true_err(surrogate)
  with pytest.raises(ValueError, match='needs the task'):
    pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 4,
                   solve_config=settings)


def test_binarize_snaps_solutions_and_posterior_to_the_box_faces(model):
  settings = model.config.solve.copy_and_resolve_references()
  settings.binarize = True
  settings.binarize_weight = 1.0
  sols = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 16,
                        solve_config=settings)
  # Snapped to the standardized box faces, reported through the same
  # float32 inverse: every coordinate is exactly a face's value.
  lo_std, hi_std = (model.x_scaler.forward(jnp.asarray(b)[None])
                    for b in model.x_range)
  lo, hi = (np.asarray(model.x_scaler.inverse(b))[0] for b in (lo_std, hi_std))
  for x in (sols.x, sols.x_posterior):
    assert np.all((x == lo) | (x == hi))
  # Ranked as binary designs: the surrogate of the snapped standardized x
  # (the same eager float32 operations on the same values: exact).
  x_std = np.where(sols.x == lo, np.asarray(lo_std), np.asarray(hi_std))
  np.testing.assert_array_equal(sols.y_surrogate, _y_sur(model, x_std))


def _pin_x2(x):
  """A repair in original units: the second coordinate set to 15."""
  return jnp.stack([x[:, 0], jnp.full_like(x[:, 0], 15.0)], 1)


def test_repair_maps_every_candidate_before_it_is_ranked(model):
  settings = model.config.solve.copy_and_resolve_references()
  settings.repair = True
  settings.oversample = 4.0
  sols = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 16,
                        solve_config=settings, repair=_pin_x2)
  # Solutions and posterior samples are repaired designs (x2 = 15 through
  # one float32 round trip of the x scaler) ...
  tol = _round_trip_tol(model.x_scaler, [15.0, 15.0])[1]
  for x in (sols.x, sols.x_posterior):
    assert np.all(np.abs(x[:, 1] - 15.0) <= tol)
  # ... ranked and reported by the surrogate at the repaired design. The
  # test's input differs from the ranked one by one x-scaler round trip
  # (<= 3 eps |x| ~ 4e-6 here), which the surrogate's slope (~100 per unit)
  # turns into ~1.3e-7 relative at y = 3000, plus the float32 roundoff of
  # two evaluations of the small MLP (tens of eps, ~1e-6 relative): 1e-5
  # bounds both on any x86 ISA.
  x_std = model.x_scaler.forward(jnp.asarray(_pin_x2(jnp.asarray(sols.x))))
  np.testing.assert_allclose(sols.y_surrogate, _y_sur(model, x_std),
                             rtol=1e-5)
  # The kept are the lowest surrogate errors, near x1 = 15; with a design
  # space of x1 >= 16 the feasible candidates come first.
  assert np.any(sols.x[:, 0] < 16.0)
  feasible = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 16,
                            solve_config=settings, repair=_pin_x2,
                            feasible=lambda x: x[:, 0] >= 16.0)
  assert np.all(feasible.x[:, 0] >= 16.0)
  # Without the setting the same call leaves x2 free; asked for without a
  # repair function it is refused.
  free = pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 16)
  assert np.max(np.abs(free.x[:, 1] - 15.0)) > 1.0
  with pytest.raises(ValueError, match='repair function'):
    pipeline.solve(model, jax.random.PRNGKey(1), [3000.0], 4,
                   solve_config=settings)


def test_posterior_keep_keeps_the_draws_with_the_smallest_inverse_padding(
    model):
  from ipage_jax import sampling
  inn, key = model.net, jax.random.PRNGKey(5)
  t_std = jnp.array([[-0.5], [0.5]])
  kept = np.asarray(pipeline.sample_posterior(inn, model.params, key, t_std,
                                              8, 'srs', keep=0.25))
  # The same 32 latent vectors per target, inverted and ranked by numpy.
  z = np.asarray(sampling.sample_latent_per_target(key, 2, 32, inn.z_dim,
                                                   'srs'))
  # Inverted as one (64, width) batch, as the code does (the same eager
  # operations on the same values), then ranked here: a gather, exact.
  v = inn.join_yz(jnp.repeat(t_std, 32, 0), jnp.asarray(z.reshape(64, -1)))
  x, pad = (np.asarray(a).reshape(2, 32, -1) for a in inn.split_input(
      inn.apply(model.params, v, method='inverse')[0]))
  for t in range(2):
    best = np.sort(np.argsort(np.sum(pad[t]**2, -1))[:8])
    np.testing.assert_array_equal(kept[t], x[t, best])
  settings = model.config.solve.copy_and_resolve_references()
  settings.posterior_keep = 0.5
  sols = pipeline.solve(model, key, [3000.0], 8, solve_config=settings,
                        localize=False)
  assert sols.x.shape == (8, 2)
  settings.posterior_keep = 1.5
  with pytest.raises(ValueError, match='posterior_keep'):
    pipeline.solve(model, key, [3000.0], 8, solve_config=settings)
  from ipage_jax import flows
  with pytest.raises(ValueError, match='has none'):
    pipeline.check_posterior_keep(flows.INN(x_dim=2, y_dim=1, z_dim=1), 0.5)
  pipeline.check_posterior_keep(flows.INN(x_dim=2, y_dim=1, z_dim=1), 1.0)
