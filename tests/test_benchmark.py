"""Benchmark harness: tables, model cache, and a tiny end-to-end run."""

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import pytest

from experiments import benchmark
from experiments import runner
from experiments.configs import sinewave as sinewave_config
from ipage_jax import methods
from ipage_jax import pipeline
from ipage_jax import tasks


def _run(task, method, seed, q_a, q_b):
  return {'task': task, 'method': method, 'seed': seed,
          'protocol_a': {'resimulation_error': q_a},
          'protocol_b': {'resimulation_error': q_b}}


def _cell(values):
  """mean ± sample std, written out independently of the harness."""
  n = len(values)
  mean = sum(values) / n
  std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
  return f'{mean:.2e} ± {std:.1e}'


def test_format_table_mean_std_over_seeds():
  runs = [_run('sinewave', 'ipage', 0, 1e-3, 2e-3),
          _run('sinewave', 'ipage', 1, 3e-3, 4e-3),
          _run('sinewave', 'ipage', 2, 8e-3, 1e-3),
          _run('robot_arm', 'ipage', 0, 0.5, 0.25),
          _run('sinewave', 'inn', 0, 0.2, 0.1),
          _run('sinewave', 'inn', 1, 0.4, 0.3)]
  task_list = [tasks.get('sinewave'), tasks.get('robot_arm')]
  table = benchmark.format_table(runs, 'protocol_a/resimulation_error',
                                 task_list, ['ipage', 'inn'])
  lines = table.splitlines()
  assert lines[0] == '| method | sinewave | robot_arm |'
  assert lines[1] == '|---|---|---|'
  # Seeds 0-2 occur in the runs: a cell over fewer says how many.
  assert lines[2] == (f'| ipage | {_cell([1e-3, 3e-3, 8e-3])} | '
                      '5.00e-01 (n = 1) |')
  assert lines[3] == f'| inn | {_cell([0.2, 0.4])} (n = 2) | – |'
  assert _cell([0.2, 0.4]) == '3.00e-01 ± 1.4e-01'
  b = benchmark.format_table(runs, 'protocol_b/resimulation_error',
                             task_list[:1], ['inn'])
  assert b.splitlines()[2] == f'| inn | {_cell([0.1, 0.3])} (n = 2) |'
  one_seed = benchmark.format_table(runs[3:4], 'protocol_a/resimulation_error',
                                    task_list[1:], ['ipage'])
  assert one_seed.splitlines()[2] == '| ipage | 5.00e-01 |'


def test_oracle_columns_are_labelled():
  task = tasks.get('sinewave')
  oracle = type(task)(**{**task.__dict__, 'name': 'crystal',
                         'simulator_kind': 'oracle'})
  assert benchmark.column_label(oracle) == 'crystal (vs oracle)'
  assert benchmark.column_label(task) == 'sinewave'


def test_parse_seeds_and_holdout_split():
  assert benchmark.parse_seeds(['3']) == [0, 1, 2]
  assert benchmark.parse_seeds(['4', '9']) == [4, 9]
  assert benchmark.parse_seeds(['2-2']) == [2]
  assert benchmark.parse_seeds(['0', '3-5']) == [0, 3, 4, 5]
  for bad in (['0'], ['a'], ['1', '1']):
    with pytest.raises(runner.UsageError):
      benchmark.parse_seeds(bad)
  train, held = benchmark.holdout_split(jax.random.PRNGKey(0), 50, 10)
  assert len(held) == 10 and len(train) == 40
  assert not set(train) & set(held)
  assert sorted(set(train) | set(held)) == list(range(50))
  with pytest.raises(ValueError, match='hold out'):
    benchmark.holdout_split(jax.random.PRNGKey(0), 10, 10)


class _Fake:
  """A method whose model is a small record; counts its fits."""

  class Model(NamedTuple):
    mean: float
    rows: int
    config: dict

  def __init__(self):
    self.fits = 0

  def fit(self, key, x, y, config, checkpoint_dir=None, progress=None,
          augment=None):
    self.fits += 1
    return self.Model(float(np.mean(x)), int(x.shape[0]), config.to_dict())

  def save(self, path, model):
    config = model.config  # a ConfigDict once the cache has replaced it
    config = config.to_dict() if hasattr(config, 'to_dict') else config
    with open(path, 'w') as f:
      json.dump(dict(model._asdict(), config=config), f)

  def load(self, path):
    with open(path) as f:
      return self.Model(**json.load(f))

  def method(self, name):
    return methods.Method(name, self.fit, None, self.save, self.load, '')


def test_fit_cached_reuses_shares_and_refits(tmp_path):
  fake = _Fake()
  a, b = fake.method('a'), fake.method('b')
  config = ml_collections.ConfigDict(
      {'train': {'epochs': 1}, 'log_every': 1, 'widths': (1, 2)})
  x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
  key = jax.random.PRNGKey(0)
  path_a = benchmark.model_path(str(tmp_path), 't', 'a', 0)
  path_b = benchmark.model_path(str(tmp_path), 't', 'b', 0)
  fp = {'config': config.to_dict(), 'data': [8, 2]}
  model, info = benchmark.fit_cached(a, key, x, y, config, path_a, fp)
  assert fake.fits == 1 and info['source'] == 'trained'
  assert model[:2] == (1.0, 8)
  # Same fingerprint (tuples and lists alike): read back, no fit.
  again, info = benchmark.fit_cached(a, key, x, y, config, path_a, fp)
  assert fake.fits == 1 and info['source'] == 'cache' and again[:2] == (1, 8)
  # Another method with the same fit takes the model over.
  shared, info = benchmark.fit_cached(b, key, x, y, config, path_b, fp,
                                      donors=[path_a])
  assert fake.fits == 1 and info['source'] == path_a and shared[:2] == (1, 8)
  assert os.path.exists(path_b)
  # Solve settings (also a method's own) do not touch training: the cached
  # model is reused and carries the new settings.
  solve_changed = ml_collections.ConfigDict(
      dict(config.to_dict(), solve={'steps': 5}, na={'solve': {'steps': 9}}))
  fp_solve = dict(fp, config=solve_changed.to_dict())
  fp_solve['config']['na'] = {'solve': {'steps': 9}}
  reused, info = benchmark.fit_cached(a, key, x, y, solve_changed, path_a,
                                      fp_solve)
  assert fake.fits == 1 and info['source'] == 'cache'
  assert reused.config is solve_changed
  # ... but a method section's training settings do.
  train_changed = dict(fp, config=dict(fp['config'],
                                       na={'train': {'epochs': 2}}))
  benchmark.fit_cached(a, key, x, y, config, path_a, train_changed)
  assert fake.fits == 2
  benchmark.fit_cached(a, key, x, y, config, path_a, fp)
  assert fake.fits == 3
  # A changed setting invalidates the cache.
  benchmark.fit_cached(a, key, x[:4], y[:4], config, path_a,
                       dict(fp, data=[4, 2]))
  assert fake.fits == 4
  assert benchmark.fit_cached(a, key, x, y, config, path_a, fp)[1][
      'source'] == 'trained'
  assert not [p for p in os.listdir(os.path.dirname(path_a))
              if '.ckpt-' in p or p.startswith('.tmp')]


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """Two runs of the harness's main on sinewave; counts the real fits."""
  workdir = tmp_path_factory.mktemp('bench') / 'out'
  counts = {'fit': 0}
  real_get = methods.get
  wrapped = {}

  def counting_get(name):
    m = real_get(name)
    if m.fit not in wrapped:
      def fit(*args, _fit=m.fit, **kwargs):
        counts['fit'] += 1
        return _fit(*args, **kwargs)
      wrapped[m.fit] = fit
    return m._replace(fit=wrapped[m.fit])

  args = ['prog', f'--workdir={workdir}', '--tasks=sinewave',
          '--methods=ipage,inn,na', '--seeds=1', '--quick', '--epochs=1',
          '--num_targets=8', '--num_solutions=8', '--rt_max=4',
          '--steps_grid=0,3', '--steps_solutions=8']
  fits, outputs = [], []
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(methods, 'get', counting_get)
    try:
      for _ in range(2):
        runner.FLAGS.unparse_flags()
        runner.FLAGS(args)
        benchmark.main(['prog'])
        fits.append(counts['fit'])
        with open(workdir / 'results.json') as f:
          outputs.append(json.load(f))
    finally:
      runner.FLAGS.unparse_flags()
  return workdir, fits, outputs


def test_harness_writes_finite_results(smoke):
  workdir, _, outputs = smoke
  for name in ('results.json', 'results.md', 'time_to_solution.png',
               'r_t.png', 'steps_to_accuracy.png', 'solutions_sinewave.png',
               'solutions/sinewave/na_seed0.npz',
               'models/sinewave/ipage/seed0.msgpack',
               'models/sinewave/inn/seed0.msgpack',
               'models/sinewave/na/seed0.msgpack'):
    assert (workdir / name).exists(), name
  results = outputs[-1]
  assert [(r['method'], r['seed']) for r in results['runs']] == [
      ('ipage', 0), ('inn', 0), ('na', 0)]
  by_method = {r['method']: r for r in results['runs']}
  # r_T: 8 targets (quick default capped by --num_targets), T = 1, 2, 4.
  for r in results['runs']:
    assert r['r_t']['t'] == [1, 2, 4]
    assert np.all(np.diff(r['r_t']['r_t']) <= 1e-12)  # more proposals help
    assert r['num_params'] > 0
  # Only the methods that localize have a steps curve; NA localizes 10
  # starts per solution (at least the config's diversity pool per target)
  # for 3 steps at the second grid point.
  assert 'steps_curve' not in by_method['inn']
  pool = max(10 * 8, sinewave_config.get_config().solve.min_candidates)
  assert by_method['na']['steps_curve']['gradient_steps_per_solution'] == [
      0, pool * 3 / 8]
  assert by_method['inn']['protocol_b']['gradient_steps_per_solution'] == 0
  for r in results['runs']:
    assert r['protocol_a']['num_targets'] == 8
    assert r['protocol_b']['num_solutions'] == 8
    for protocol in ('protocol_a', 'protocol_b'):
      for k in ('resimulation_error', 'inference_s', 'localization_s'):
        assert np.isfinite(r[protocol][k]) and r[protocol][k] >= 0, k
    assert np.isfinite(r['protocol_b']['diversity'])
  md = (workdir / 'results.md').read_text()
  assert '## Table 2' in md and '## Table 3' in md
  assert '| ipage | ' in md and '| inn | ' in md and '| na | ' in md
  assert '## Localization budget to reach a given error' in md


def test_harness_trains_once_and_reuses_models(smoke):
  _, fits, outputs = smoke
  assert fits == [2, 2]  # ipage and inn share one fit; the rerun loads all
  assert [r['source'] for r in outputs[1]['runs']] == ['cache'] * 3
  for first, second in zip(outputs[0]['runs'], outputs[1]['runs']):
    assert (first['protocol_a']['resimulation_error']
            == second['protocol_a']['resimulation_error'])


def test_bad_flags_stop_before_writing(tmp_path):
  workdir = tmp_path / 'out'
  for bad in (['--methods=nope'], ['--seeds=0'], ['--target=1'],
              ['--tasks=nope']):
    runner.FLAGS.unparse_flags()
    runner.FLAGS(['prog', f'--workdir={workdir}', *bad])
    try:
      with pytest.raises(SystemExit) as e:
        benchmark.main(['prog'])
    finally:
      runner.FLAGS.unparse_flags()
    assert e.value.code == 2, bad
  assert not workdir.exists()


def test_steps_comparison_reads_budgets_off_the_mean_curves():
  curve = (np.array([0.0, 100.0, 1000.0]), np.array([0.5, 0.01, 0.001]))
  assert benchmark.budget_to_reach(curve, 0.02) == 100.0
  assert benchmark.budget_to_reach(curve, 0.5) == 0.0
  assert benchmark.budget_to_reach(curve, 1e-4) is None

  def run(method, seed, budgets, errors):
    return {'task': 'sinewave', 'method': method, 'seed': seed,
            'steps_curve': {'gradient_steps_per_solution': budgets,
                            'resimulation_error': errors}}

  runs = [run('ipage', 0, [0, 120, 1200], [0.2, 0.004, 0.001]),
          run('ipage', 1, [0, 120, 1200], [0.4, 0.006, 0.003]),
          run('na', 0, [0, 1000, 10000], [0.9, 0.02, 0.005])]
  (_, _, row,) = benchmark.steps_comparison(runs, [tasks.get('sinewave')])
  cells = [c.strip() for c in row.strip('|').split('|')]
  # Only seed 0 has both curves, so iPage's curve is seed 0's alone. NA's
  # final Q 0.005 is reached by it at 120 steps: 10000 / 120 = 83.3x fewer;
  # iPage's final 0.001 is never reached by NA on its grid.
  assert cells == ['sinewave', '0', '5.00e-03', '120', '10000', '83.3x',
                   '1.00e-03', '> 10000', '1200']
  # With NA's seed 1 too, both curves are means over seeds 0 and 1:
  # iPage's (0.3, 0.005, 0.002) reaches NA's final 0.006 at 120 steps.
  runs.append(run('na', 1, [0, 1000, 10000], [0.7, 0.03, 0.007]))
  (_, _, row,) = benchmark.steps_comparison(runs, [tasks.get('sinewave')])
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells == ['sinewave', '0, 1', '6.00e-03', '120', '10000', '83.3x',
                   '2.00e-03', '> 10000', '1200']


def test_later_invocations_add_seeds_to_the_table(smoke):
  workdir, _, outputs = smoke
  settings = benchmark.Settings(
      **{k: (tuple(v) if k == 'steps_grid' else v)
         for k, v in outputs[-1]['settings'].items()
         if k in {f.name for f in dataclasses.fields(benchmark.Settings)}})
  digest = outputs[-1]['runs'][0]['config_digest']
  runs = outputs[-1]['runs']
  # Another seed of the same task and config keeps all earlier runs ...
  kept = benchmark.earlier_runs(settings, {'sinewave': digest},
                                {('sinewave', 'ipage', 1)})
  assert kept == runs
  # ... a rerun of a (task, method, seed) replaces that run ...
  kept = benchmark.earlier_runs(settings, {'sinewave': digest},
                                {('sinewave', 'na', 0)})
  assert [r['method'] for r in kept] == ['ipage', 'inn']
  # ... and a changed task config or protocol drops them.
  assert benchmark.earlier_runs(settings, {'sinewave': 'other'}, set()) == []
  other = dataclasses.replace(settings, num_solutions=9)
  assert benchmark.earlier_runs(other, {'sinewave': digest}, set()) == []


def test_r_t_ranks_only_the_methods_that_localize():
  task = tasks.get('sinewave')
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(2, 3, 2)).astype(np.float32)
  y_targets = np.array([[1.2], [0.3]], np.float32)
  err = ((np.asarray(task.simulate(x.reshape(-1, 2)))[:, 0].reshape(2, 3)
          - y_targets) ** 2)
  surrogate = -err  # ranks the proposals worst-first

  def fake(steps):
    sols = pipeline.Solutions(
        x=x, x_posterior=x, y_surrogate=np.zeros((2, 3, 1)),
        surrogate_error=surrogate, y_target=y_targets, inference_s=0.0,
        localization_s=0.0, gradient_steps_per_solution=steps)
    return methods.Method('fake', None, lambda *a, **k: sols, None, None, '')

  drawn = benchmark.r_t_record(task, fake(0.0), None, None, y_targets, 3,
                               'srs')
  ranked = benchmark.r_t_record(task, fake(5.0), None, None, y_targets, 3,
                                'srs')
  assert drawn['t'] == [1, 2, 3]
  np.testing.assert_allclose(drawn['r_t'], [
      err[:, 0].mean(), err[:, :2].min(1).mean(), err.min(1).mean()],
                             rtol=1e-5)
  worst_first = np.sort(err, 1)[:, ::-1]
  np.testing.assert_allclose(ranked['r_t'], [
      worst_first[:, 0].mean(), worst_first[:, :2].min(1).mean(),
      err.min(1).mean()], rtol=1e-5)


def test_extra_targets_are_evaluated_and_tabulated():
  """Protocol B runs at each extra target, with the error of those designs."""
  base_task = tasks.get('sinewave')
  task = dataclasses.replace(
      base_task, extra_targets=(np.array([0.5], np.float32),))
  designs = np.asarray(base_task.sample_prior(jax.random.PRNGKey(3), 6))

  def solve(model, key, y_target, num_solutions, sampler):
    del model, sampler
    t = np.atleast_2d(np.asarray(y_target, np.float32))
    rows = np.asarray(jax.random.choice(key, 6, (t.shape[0], num_solutions)))
    x = designs[rows]
    return pipeline.Solutions(
        x=x if t.shape[0] > 1 else x[0], x_posterior=x, y_surrogate=None,
        surrogate_error=np.zeros(rows.shape), y_target=t, inference_s=0.0,
        localization_s=0.0, gradient_steps_per_solution=0.0)

  method = methods.Method('fake', None, solve, None, None, 'fixed designs')
  record, _ = benchmark.evaluate(task, method, None, jax.random.PRNGKey(0),
                                 np.array([[0.1], [0.2]], np.float32), 4,
                                 'srs')
  (extra,) = record['protocol_b_extra']
  assert extra['target'] == [0.5] and extra['num_solutions'] == 4
  # The same key a second time gives the designs the harness scored.
  x = solve(None, jax.random.fold_in(
      jax.random.split(jax.random.PRNGKey(0))[1], 1), [0.5], 4, None).x
  y = np.asarray(base_task.simulate(x), np.float64)
  np.testing.assert_allclose(extra['resimulation_error'],
                             np.mean((y[:, 0] - 0.5) ** 2), rtol=1e-5)
  assert 'protocol_b_extra' not in benchmark.evaluate(
      base_task, method, None, jax.random.PRNGKey(0),
      np.array([[0.1]], np.float32), 4, 'srs')[0]

  runs = [{'task': 'sinewave', 'method': 'ipage', 'seed': s,
           'protocol_b_extra': [{'resimulation_error': v}]}
          for s, v in enumerate((1e-3, 3e-3))]
  table = benchmark.format_extra_targets_table(runs, [task], ['ipage', 'na'])
  lines = table.splitlines()
  assert lines[0] == '| method | sinewave, y* = 0.5 |'
  assert lines[2] == f'| ipage | {_cell([1e-3, 3e-3])} |'
  assert lines[3] == '| na | – |'
  assert benchmark.format_extra_targets_table(runs, [base_task],
                                              ['ipage']) == ''


def test_sinewave_coverage_table_of_cached_models(smoke):
  from experiments import sinewave_coverage
  workdir, _, _ = smoke
  table = sinewave_coverage.coverage_table(str(workdir), [0], [8],
                                           ['surrogate', 'diversity'])
  rows = table.splitlines()[2:]
  assert len(rows) == 2 * 3  # rankings x samplers
  for row in rows:
    cell = row.split('|')[4]
    covered = int(cell.split('/')[0])
    assert 0 <= covered <= 8  # 8 solutions reach at most 8 of the 9 modes
    assert np.isfinite(float(cell.split('Q')[1]))


def test_solve_ablation_applies_each_setting(smoke):
  """A row of `solve_ablation` is protocol B under its overrides: with no
  localization, no oversampling and no diversity pool it is the plain
  posterior's Q, computed here from `sample_posterior` and the exact
  simulator."""
  from experiments import solve_ablation
  from ipage_jax.tasks import sinewave
  workdir, _, _ = smoke
  settings = ["localize_steps=0 oversample=1 rank_by='surrogate'",
              'localize_steps=20 localize_learning_rate=0.01 oversample=2']
  table = solve_ablation.ablation_table(str(workdir), 'sinewave', 'ipage',
                                        [0], settings, [1.2, 0.5], 8)
  rows = [r.split('|')[2:4] for r in table.splitlines()[2:]]
  q = np.array([[float(c.split()[0]) for c in row] for row in rows])
  model = methods.get('ipage').load(
      benchmark.model_path(str(workdir), 'sinewave', 'ipage', 0))
  for j, target in enumerate([1.2, 0.5]):
    t_std = model.y_scaler.forward(np.array([[target]], np.float32))
    drawn = model.x_scaler.inverse(pipeline.sample_posterior(
        model.inn, model.params, jax.random.PRNGKey(0), t_std, 8,
        model.config.solve.sampler)[0])
    expected = np.mean((np.asarray(sinewave.simulate(drawn))[:, 0]
                        - target) ** 2)
    np.testing.assert_allclose(q[0, j], expected, rtol=1e-2)
    assert q[1, j] != q[0, j]  # the second setting changes the solutions
  with pytest.raises(runner.UsageError, match='unknown solve setting'):
    solve_ablation.ablation_table(str(workdir), 'sinewave', 'ipage', [0],
                                  ['no_such=1'], [1.2], 8)
  with pytest.raises(runner.UsageError, match='key=value'):
    solve_ablation.parse_setting('oversample')
