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

# Column ranges printed in the data README (3 decimals).
README_MIN = np.array([2.529, 2.528, 9.837, 72.00, 72.01, 96.00, -1.00])
README_MAX = np.array([3.792, 3.792, 14.753, 107.99, 108.00, 143.99, 1.00])
TINY = dict(members=2, hidden=8, depth=2, epochs=1, batch_size=64,
            floor=0.0)


def test_load_data_shapes_and_readme_figures():
  x, y = mos2.load_data()
  assert x.shape == (10798, 7) and y.shape == (10798, 1)
  assert x.dtype == np.float32 and y.dtype == np.float32
  assert np.isfinite(x).all() and np.isfinite(y).all()
  np.testing.assert_allclose(x.min(0), README_MIN, atol=0.006)
  np.testing.assert_allclose(x.max(0), README_MAX, atol=0.006)
  assert y.min() == 0.0
  assert y.max() == pytest.approx(2.39, abs=0.005)
  assert 0.63 < np.mean(y == 0) < 0.65      # "about 64 % exactly 0"
  assert np.median(y) == 0.0
  assert np.quantile(y, 0.9) == pytest.approx(0.98, abs=0.03)
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
  np.testing.assert_allclose(y1, np.asarray(oracle.predict(saved, x)),
                             rtol=1e-6, atol=1e-7)
  # A file in the cache is loaded, not retrained: replace it with an oracle
  # whose outputs are shifted by +1 eV.
  shifted = saved._replace(y_scaler=saved.y_scaler._replace(
      mean=saved.y_scaler.mean + 1.0))
  oracle.save_oracle(path, shifted, {'kfold': {'rmse': 0.1}})
  mos2._oracle_at.cache_clear()
  y2 = np.asarray(task.simulate(x))
  members = np.asarray(oracle.predict_members(saved, x)) + 1.0
  want = np.maximum(np.maximum(members, 0.0).mean(0), 0.0)
  np.testing.assert_allclose(y2, want, rtol=1e-5, atol=1e-5)
  assert y2.mean() > y1.mean() + 0.2
  assert mos2.oracle_report() == {'kfold': {'rmse': 0.1}}
  with pytest.raises(ValueError, match='shape'):
    task.simulate(x[:5, :6])
