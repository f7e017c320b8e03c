"""Tests of the MoS2 task (ipage_jax/tasks/mos2.py)."""

import os
import warnings

import jax
import numpy as np
import pytest
from scipy import stats

from ipage_jax import oracle
from ipage_jax import tasks
from ipage_jax.tasks import mos2

import roundoff

# Column ranges printed in the data README, with their decimals.
README_MIN = np.array([2.529, 2.528, 9.837, 72.00, 72.01, 96.00, -1.00])
README_MAX = np.array([3.792, 3.792, 14.753, 107.99, 108.00, 143.99, 1.00])
README_DECIMALS = np.array([3, 3, 3, 2, 2, 2, 2])
TINY = dict(members=2, hidden=8, depth=2, epochs=1, batch_size=64,
            floor=0.0)


def _read_csv(name):
  """A packaged CSV parsed line by line (float64), independent of numpy."""
  root = os.path.join(os.path.dirname(mos2.__file__), '..', 'data', 'mos2')
  with open(os.path.join(root, name)) as f:
    return np.array([[float(v) for v in line.split(',')] for line in f])


def test_load_data_shapes_and_readme_figures():
  x, y = mos2.load_data()
  assert x.shape == (10798, 7) and y.shape == (10798, 1)
  assert x.dtype == np.float32 and y.dtype == np.float32
  # Only parsing and one rounding to float32: exact against an
  # independent parse.
  np.testing.assert_array_equal(x, _read_csv('data_x.csv').astype(np.float32))
  np.testing.assert_array_equal(y, _read_csv('data_y.csv').astype(np.float32))
  # A figure printed with k decimals is within half a unit of the last
  # digit of the value; storing in float32 adds eps / 2 of the value.
  half = 0.5 * 10.0 ** -README_DECIMALS
  for got, fig in ((x.min(0), README_MIN), (x.max(0), README_MAX)):
    assert np.all(np.abs(got - fig) <= half + roundoff.EPS32 * np.abs(fig))
  assert y.min() == 0.0
  # "0 to 2.39" eV: 2 decimals.
  assert y.max() == pytest.approx(2.39, abs=0.005 + roundoff.EPS32 * 2.39)
  # "About 64 %" exactly 0: 2 digits, so within half a percent; the count
  # is exact (a float32 is 0 exactly when the parsed value is).
  zeros = int(np.sum(y == 0))
  assert zeros == int(np.sum(_read_csv('data_y.csv') == 0))
  assert abs(zeros / len(y) - 0.64) <= 0.005
  assert np.median(y) == 0.0  # more than half the rows are 0
  # "90th percentile ~0.98 eV": 2 decimals.
  assert np.quantile(y, 0.9) == pytest.approx(
      0.98, abs=0.005 + roundoff.EPS32 * 0.98)
  assert mos2.max_gap() == float(y.max())


def test_load_data_returns_copies():
  x, _ = mos2.load_data()
  x[0, 0] = -5.0
  assert mos2.load_data()[0][0, 0] != -5.0


def test_task_record():
  task = tasks.get('mos2')
  x, _ = mos2.load_data()
  assert (task.name, task.x_dim, task.y_dim) == ('mos2', 7, 1)
  assert task.data_size == 10798
  assert task.simulator_kind == 'oracle'
  np.testing.assert_array_equal(task.lower, x.min(0))
  np.testing.assert_array_equal(task.upper, x.max(0))
  np.testing.assert_array_equal(task.default_target, [1.0])
  assert task.x_names == ('a', 'b', 'c', 'alpha', 'beta', 'gamma', 'E')
  assert len(task.y_names) == 1


def test_make_dataset_is_a_keyed_shuffle():
  x, y = mos2.load_data()
  xs, ys = mos2.make_dataset(jax.random.PRNGKey(0))
  assert xs.shape == x.shape and ys.dtype == np.float32
  # Same rows, other order: compare lexicographically sorted rows.
  both = np.concatenate([x, y], 1)
  both_s = np.concatenate([xs, ys], 1)
  np.testing.assert_array_equal(np.unique(both, axis=0),
                                np.unique(both_s, axis=0))
  assert not np.array_equal(xs, x)
  again = mos2.make_dataset(jax.random.PRNGKey(0), 100)
  np.testing.assert_array_equal(again[0], xs[:100])
  other = mos2.make_dataset(jax.random.PRNGKey(1), 100)
  assert not np.array_equal(other[0], again[0])


@pytest.mark.parametrize('n', [10799, 0, -3, 2.5])
def test_make_dataset_bad_n(n):
  with pytest.raises(ValueError, match='n'):
    mos2.make_dataset(jax.random.PRNGKey(0), n)


def test_prior_is_uniform_in_the_box():
  lower, upper = mos2.data_bounds()
  x = np.asarray(mos2.sample_prior(jax.random.PRNGKey(3), 4000))
  assert x.shape == (4000, 7) and x.dtype == np.float32
  assert (x >= lower[None]).all() and (x <= upper[None]).all()
  for j in range(7):
    u = (x[:, j].astype(np.float64) - lower[j]) / (upper[j] - lower[j])
    assert stats.kstest(u, 'uniform').pvalue > 1e-3, mos2.X_NAMES[j]


def _count_near(t):
  _, y = mos2.load_data()
  return int(np.sum(np.abs(y[:, 0].astype(np.float64) - t) <= 0.1))


@pytest.mark.parametrize('target', [-0.01, 2.45, float('nan')])
def test_check_target_rejects_outside_the_data(target):
  with pytest.raises(ValueError, match='target'):
    mos2.check_target(target)


def test_check_target_rejects_bad_shape():
  with pytest.raises(ValueError, match='shape'):
    mos2.check_target(np.ones((2, 2)))


def test_check_target_warns_in_sparse_region():
  count = _count_near(2.0)
  assert count < mos2.SPARSE_MIN_ROWS
  with pytest.warns(UserWarning, match=f'only {count} of 10798 rows'):
    counts = mos2.check_target(2.0)
  np.testing.assert_array_equal(counts, [count])


def test_check_target_silent_in_dense_region():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    counts = mos2.check_target(np.array([[1.0], [0.0], [0.5]]))
  np.testing.assert_array_equal(
      counts, [_count_near(1.0), _count_near(0.0), _count_near(0.5)])
  assert counts.min() >= mos2.SPARSE_MIN_ROWS


def test_cache_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(mos2.CACHE_ENV, str(tmp_path))
  assert mos2.oracle_path() == os.path.join(str(tmp_path), mos2.ORACLE_FILE)
  monkeypatch.delenv(mos2.CACHE_ENV)
  assert mos2.cache_dir() == os.path.join(
      os.path.expanduser('~'), '.cache', 'ipage_jax')


def _members64(model, x):
  """An oracle's member predictions (E, n, M) in float64 at the float32 x,
  and a bound on the float32 members' error.

  Standardizing x rounds twice (gamma_2 |x_std|); the MLPs as in
  `roundoff.mlp64`; back to original units, out * scale + mean rounds twice
  (gamma_2 of |out * scale| + |result|).
  """
  f64 = lambda a: np.asarray(a, np.float64)
  h = (f64(x) - f64(model.x_scaler.mean)) / f64(model.x_scaler.scale)
  scale, mean = f64(model.y_scaler.scale), f64(model.y_scaler.mean)
  params = model.params['params']
  names = sorted(params, key=lambda n: int(n.split('_')[-1]))  # Dense_i
  out, bound = [], []
  for e in range(model.settings.members):
    layers = [(f64(params[n]['kernel'][e]), f64(params[n]['bias'][e]))
              for n in names]
    o, do = roundoff.mlp64(layers, h, roundoff.gamma(2) * np.abs(h),
                           model.settings.activation)
    y = o * scale + mean
    out.append(y)
    bound.append(do * scale + roundoff.gamma(2) * (np.abs(o * scale)
                                                   + np.abs(y)))
  return np.stack(out), np.stack(bound)


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
  monkeypatch.setenv(mos2.CACHE_ENV, str(tmp_path))
  mos2._oracle_at.cache_clear()
  yield tmp_path
  mos2._oracle_at.cache_clear()


def test_simulate_trains_caches_and_reloads(fresh_cache, monkeypatch):
  monkeypatch.setattr(mos2, 'ORACLE_SETTINGS',
                      dict(mos2.ORACLE_SETTINGS, **TINY))
  assert mos2.oracle_report() is None
  task = mos2.task()
  x = mos2.sample_prior(jax.random.PRNGKey(0), 50)
  # No cache file: the first call trains the oracle and writes it.
  y1 = np.asarray(task.simulate(x))
  path = mos2.oracle_path()
  assert y1.shape == (50, 1) and (y1 >= 0).all()
  assert os.path.exists(path)
  assert mos2.oracle_report()['seed'] == mos2.ORACLE_SEED
  saved = oracle.load_oracle(path)
  assert saved.settings == oracle.make_settings(**mos2.ORACLE_SETTINGS)
  # The file holds a copy of the float32 parameters, and both predictions
  # run the same jitted _predict on them: exact.
  arrays = lambda o: (o.params, o.x_scaler, o.y_scaler)
  trained = arrays(mos2.get_oracle())
  assert (jax.tree_util.tree_structure(trained)
          == jax.tree_util.tree_structure(arrays(saved)))
  for a, b in zip(jax.tree_util.tree_leaves(trained),
                  jax.tree_util.tree_leaves(arrays(saved))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(y1, np.asarray(oracle.predict(saved, x)))
  # A file in the cache is loaded, not retrained: replace it with an oracle
  # whose outputs are shifted by +1 eV.
  shifted = saved._replace(y_scaler=saved.y_scaler._replace(
      mean=saved.y_scaler.mean + 1.0))
  oracle.save_oracle(path, shifted, {'kfold': {'rmse': 0.1}})
  mos2._oracle_at.cache_clear()
  y2 = np.asarray(task.simulate(x))
  # Against the shifted oracle in float64: clipping is exact and
  # 1-Lipschitz, so the members' bound (mean over members) plus the float32
  # mean's rounding.
  members, bound = _members64(shifted, x)
  clipped = np.maximum(members, 0.0)
  want = np.maximum(clipped.mean(0), 0.0)
  tol = bound.mean(0) + roundoff.mean_round_off(clipped)
  assert np.all(np.abs(y2 - want) <= tol)
  assert y2.mean() > y1.mean() + 0.2
  assert mos2.oracle_report() == {'kfold': {'rmse': 0.1}}
  with pytest.raises(ValueError, match='shape'):
    task.simulate(x[:5, :6])
