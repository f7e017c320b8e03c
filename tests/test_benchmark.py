"""Benchmark harness: tables, model cache, and a tiny end-to-end run."""

import dataclasses
import json
import os
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import architected as architected_script
from experiments import benchmark
from experiments import runner
from experiments import train
from experiments.configs import architected as architected_config
from experiments.configs import sinewave as sinewave_config
from ipage_jax import data as data_lib
from ipage_jax import methods
from ipage_jax import model as model_lib
from ipage_jax import pipeline
from ipage_jax import solving
from ipage_jax import tasks
from ipage_jax.tasks import architected as arch

import roundoff


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
  rows, held = train.holdout_split(jax.random.PRNGKey(0), 50, 10)
  assert len(held) == 10 and len(rows) == 40
  assert not set(rows) & set(held)
  assert sorted(set(rows) | set(held)) == list(range(50))
  with pytest.raises(ValueError, match='hold out'):
    train.holdout_split(jax.random.PRNGKey(0), 10, 10)


class _FakeModel(NamedTuple):
  mean: float
  rows: int
  config: ml_collections.ConfigDict
  diverged: bool = False


def test_fit_or_reuse_reuses_shares_and_refits(tmp_path, monkeypatch):
  """One cache rule: a model is reused iff its fingerprint (up to solve
  settings) matches; methods with the same fit take each other's model."""
  fits, files = [], {}
  monkeypatch.setattr(methods, 'save_model',
                      lambda path, model: files.update({path: model}))
  monkeypatch.setattr(methods, 'load_model',
                      lambda path, method: files[path])

  def fit(key, x, y, config, **kwargs):
    fits.append(1)
    return _FakeModel(float(np.mean(x)), int(x.shape[0]), config)

  method = methods.get('ipage')._replace(fit=fit)
  config = sinewave_config.get_config()
  config.run.task = 'sinewave'
  config.run.reuse_model = True
  x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
  key = jax.random.PRNGKey(0)
  fp = {'config': train.result_settings(config), 'data': [8, 2]}

  def call(workdir, cfg=config, fingerprint=fp):
    os.makedirs(workdir, exist_ok=True)  # save_model is faked
    run = train.Run(tasks.get('sinewave'), method, cfg, str(workdir))
    with open(os.path.join(workdir, 'model'), 'w'):  # a model exists
      pass
    return train.fit_or_reuse(run, key, x, y, fingerprint, label='t')

  model, info = call(tmp_path / 'a')
  assert len(fits) == 1 and info['source'] == 'trained'
  # Same fingerprint (tuples and lists alike): read back, no fit.
  again, info = call(tmp_path / 'a')
  assert len(fits) == 1 and info['source'] == 'cache' and again.rows == 8
  # Another run with the first as a donor takes the model over.
  shared = ml_collections.ConfigDict(config.to_dict())
  shared.run.donors = [str(tmp_path / 'a' / 'model')]
  _, info = call(tmp_path / 'b', shared)
  assert len(fits) == 1 and info['source'] == str(tmp_path / 'a' / 'model')
  assert os.path.exists(tmp_path / 'b' / 'model.json')
  # Solve settings (also a method's own) do not touch training: the cached
  # model is reused and carries the new settings.
  solve_changed = ml_collections.ConfigDict(config.to_dict())
  solve_changed.solve.localize_steps = 5
  solve_changed.na = {'solve': {'oversample': 3.0}}
  reused, info = call(tmp_path / 'a', solve_changed,
                      dict(fp, config=train.result_settings(solve_changed)))
  assert len(fits) == 1 and info['source'] == 'cache'
  assert reused.config is solve_changed
  # ... but a method section's training settings do, and so does the data.
  train_changed = dict(fp, config=dict(fp['config'],
                                       na={'train': {'epochs': 2}}))
  call(tmp_path / 'a', config, train_changed)
  assert len(fits) == 2
  call(tmp_path / 'a', config, dict(fp, data=[4, 2]))
  assert len(fits) == 3
  # Without reuse_model it always trains.
  fresh = ml_collections.ConfigDict(config.to_dict())
  fresh.run.reuse_model = False
  call(tmp_path / 'a', fresh, dict(fp, data=[4, 2]))
  assert len(fits) == 4
  assert not [p for p in os.listdir(tmp_path / 'a') if '.ckpt-' in p]


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
               'runs/sinewave/na/seed0/solutions.npz',
               'runs/sinewave/na/seed0/metrics.json',
               'runs/sinewave/ipage/seed0/model',
               'runs/sinewave/inn/seed0/model.json',
               'runs/sinewave/na/seed0/model'):
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
  # The posterior before localization: for the methods that sample one;
  # without localization (inn) it is the final error.
  inn = by_method['inn']
  for protocol in ('protocol_a', 'protocol_b'):
    assert 'posterior_resimulation_error' not in by_method['na'][protocol]
    assert np.isfinite(
        by_method['ipage'][protocol]['posterior_resimulation_error'])
    assert (inn[protocol]['posterior_resimulation_error']
            == inn[protocol]['resimulation_error'])
  for r in results['runs']:
    cov = r['mode_coverage']
    assert cov['num_solutions'] == 200 and 0 <= cov['modes_covered'] <= 9
  assert 'posterior_modes_covered' not in by_method['na']['mode_coverage']
  assert (inn['mode_coverage']['posterior_modes_covered']
          == inn['mode_coverage']['modes_covered'])
  md = (workdir / 'results.md').read_text()
  assert '## Table 2' in md and '## Table 3' in md
  assert '## Posterior samples before localization' in md
  assert '## Modes covered by 200 posterior samples' in md
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
              ['--tasks=nope'], ['--sampler=sobol'], ['--epochs=0']):
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


def _lookup_run(task, designs, workdir):
  """A run of a fake method that draws rows of `designs` (identity
  scalers), with the benchmark's protocols switched on."""
  config = sinewave_config.get_config()
  config.run.task = task.name
  config.evaluate.coverage_solutions = 0
  d, m = task.x_dim, task.y_dim
  model = model_lib.Model(
      method='lookup', net=None, params=None, best_params=None,
      x_scaler=data_lib.Standardizer(jnp.zeros(d), jnp.ones(d)),
      y_scaler=data_lib.Standardizer(jnp.zeros(m), jnp.ones(m)),
      x_range=(task.lower, task.upper),
      y_range=(np.full(m, -10.0), np.full(m, 10.0)), config=config,
      history={})

  def draw(key, t, n, settings):
    del settings
    return jnp.asarray(designs)[jax.random.choice(key, len(designs),
                                                  (t.shape[0], n))]

  method = methods.Method(
      name='lookup', description='fixed designs', fit=None,
      solver=lambda _: solving.Solver(draw, None, localize=False),
      solve_section=lambda c: c.solve, build=None, template=None,
      draws_posterior=True)
  return train.Run(task, method, config, str(workdir)), model, draw


def test_extra_targets_are_evaluated_and_tabulated(tmp_path):
  """Protocol B runs at each extra target, with the error of those designs."""
  base_task = tasks.get('sinewave')
  task = dataclasses.replace(
      base_task, extra_targets=(np.array([0.5], np.float32),))
  designs = np.asarray(base_task.sample_prior(jax.random.PRNGKey(3), 6))
  run, model, draw = _lookup_run(task, designs, tmp_path)
  run.config.run.num_solutions = 4
  key = jax.random.PRNGKey(0)
  record, _ = train.evaluate_protocols(
      run, model, key, np.array([[0.1], [0.2]], np.float32), 'fake')
  (extra,) = record['protocol_b_extra']
  assert extra['target'] == [0.5] and extra['num_solutions'] == 4
  # The designs the harness scored: protocol B's key folded with 1.
  key_b = jax.random.split(jax.random.split(key, 3)[0])[1]
  x = np.asarray(draw(jax.random.fold_in(key_b, 1), np.zeros((1, 1)), 4,
                      None))[0]
  # A float64 sinewave on those float32 designs; the harness's mean of
  # float32 squared errors is within the round-off bound of `sine_mse`
  # (the simulator's counted roundings, the square, the mean's n eps / 2).
  want, tol = roundoff.sine_mse(x, 0.5)
  np.testing.assert_allclose(extra['resimulation_error'], want, rtol=0,
                             atol=tol)
  # Not localized: the posterior samples are the solutions.
  assert (extra['posterior_resimulation_error']
          == extra['resimulation_error'])
  run = dataclasses.replace(run, task=base_task)
  assert 'protocol_b_extra' not in train.evaluate_protocols(
      run, model, key, np.array([[0.1]], np.float32), 'fake')[0]

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


def test_results_of_an_earlier_version_load_or_are_refused(tmp_path):
  settings = benchmark.Settings(str(tmp_path), 8, 8)
  old_run = {'task': 'sinewave', 'method': 'ipage', 'seed': 0,
             'config_digest': 'd', 'source': 'trained',
             'protocol_a': {'resimulation_error': 1e-3, 'num_invalid': 0},
             'protocol_b': {'resimulation_error': 2e-3, 'total_s': 1.0,
                            'inference_s': 0.5, 'localization_s': 0.5}}
  info = dict(dataclasses.asdict(settings), tasks=['sinewave'],
              methods=['ipage'], seeds=[0])
  train.write_json(str(tmp_path / 'results.json'),
                   {'settings': info, 'runs': [old_run], 'skipped': []})
  kept = benchmark.earlier_runs(settings, {'sinewave': 'd'}, set())
  assert kept == [old_run]
  md = benchmark.format_report({'settings': info, 'runs': kept,
                                'skipped': []}, [tasks.get('sinewave')])
  assert '| ipage | 1.00e-03 |' in md
  assert 'Posterior samples' not in md  # no such numbers in old runs
  train.write_json(str(tmp_path / 'results.json'), [old_run])
  with pytest.raises(runner.UsageError, match='not a results file'):
    benchmark.earlier_runs(settings, {'sinewave': 'd'}, set())


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


def test_solve_ablation_protocol_a_is_the_benchmarks(smoke):
  """`solve_ablation --protocol a` with the run's own settings is the
  benchmark's protocol A (same held-out targets and key, the same Q_A);
  `retries=1 accept_error=0` retries every target once: twice the work.
  The benchmark's phase-by-phase solve (`train.timed_solve`) retries as
  `solve` does."""
  from experiments import solve_ablation
  workdir, _, outputs = smoke
  (record,) = [r['protocol_a'] for r in outputs[-1]['runs'] if (
      r['task'], r['method'], r['seed']) == ('sinewave', 'ipage', 0)]
  table = solve_ablation.protocol_a_table(
      str(workdir), 'sinewave', 'ipage', [0],
      ['', 'retries=1 accept_error=0.0'])
  rows = [r.split('|')[1:-1] for r in table.splitlines()[2:]]
  assert rows[0][1].strip() == f"{record['resimulation_error']:.2e}"
  steps = [float(r[7]) for r in rows]
  assert steps[0] == record['gradient_steps_per_solution'] > 0
  assert steps[1] == 2 * steps[0]
  assert rows[0][2].strip() == f"{record['resimulation_error']:.1e}"
  assert 0 <= int(rows[0][5]) <= 8 == int(rows[1][5])  # all off at 0
  assert rows[0][6].strip() == '–'  # the sinewave has no `feasible`
  model = methods.load_model(
      benchmark.model_path(str(workdir), 'sinewave', 'ipage', 0))
  targets, key = solve_ablation.heldout_targets(
      tasks.get('sinewave'), model,
      benchmark.run_dir(str(workdir), 'sinewave', 'ipage', 0))
  assert targets.shape == (8, 1)
  solve = train.override_solve(model.config.solve, 'retries=2')
  run = train.Run(tasks.get('sinewave'), methods.get('ipage'), model.config,
                  str(workdir))
  timed, _ = train.timed_solve(run, model, key, targets, 2, label='t',
                               solve_config=solve)
  whole = run.method.solve(model, key, targets, 2, solve_config=solve)
  for name in ('x', 'x_posterior', 'surrogate_error'):
    np.testing.assert_array_equal(getattr(timed, name), getattr(whole, name))
  assert timed.gradient_steps_per_solution == (
      whole.gradient_steps_per_solution)

def test_solve_ablation_applies_each_setting(smoke):
  """A row of `solve_ablation` is protocol B under its overrides: with no
  localization, no oversampling and no diversity pool it is the plain
  posterior's Q, computed here from the solver's posterior draw and a
  float64 sinewave."""
  from experiments import solve_ablation
  workdir, _, _ = smoke
  settings = ["localize_steps=0 oversample=1 rank_by='surrogate'",
              'localize_steps=20 localize_learning_rate=0.01 oversample=2']
  table = solve_ablation.ablation_table(str(workdir), 'sinewave', 'ipage',
                                        [0], settings, [1.2, 0.5], 8)
  rows = [r.split('|')[2:4] for r in table.splitlines()[2:]]
  q = np.array([[float(c.split()[0]) for c in row] for row in rows])
  model = methods.load_model(
      benchmark.model_path(str(workdir), 'sinewave', 'ipage', 0))
  # The first row's settings: the task config's solve section, overridden.
  settings = solving.solve_settings(
      sinewave_config.get_config().solve, localize_steps=0, oversample=1.0,
      rank_by='surrogate')
  for j, target in enumerate([1.2, 0.5]):
    # The posterior draw of seed 0's key, by the solver's own compiled draw
    # and the same eager inverse as solve: the designs the row scored,
    # bitwise (with 0 steps and oversample 1 solve only copies them).
    t_std = model.y_scaler.forward(np.array([[target]], np.float32))
    drawn = np.asarray(model.x_scaler.inverse(pipeline.solver(model).draw(
        jax.random.PRNGKey(0), t_std, 8, settings)[0]))
    # Their Q in float64 and the float32 Q's round-off bound (`sine_mse`);
    # the table prints Q with 3 significant digits (`.2e`), so within half
    # a unit of the last one, 0.005 10^e for Q's decimal exponent e.
    want, tol = roundoff.sine_mse(drawn, target)
    digit = 10.0 ** (np.floor(np.log10(want + tol)) - 2)
    np.testing.assert_allclose(q[0, j], want, rtol=0,
                               atol=digit / 2 + tol)
    assert q[1, j] != q[0, j]  # the second setting changes the solutions
  # The cost columns: 8 candidates for 8 solutions, each ranked once; then
  # the 200 candidates of the config's diversity pool (min_candidates) per 8
  # solutions, each through 20 steps and ranked.
  cost = [r.split('|')[4:6] for r in table.splitlines()[2:]]
  assert [float(c[0]) for c in cost] == [1.0, 200 / 8 * 21]
  assert all(float(c[1]) > 0 for c in cost)
  with pytest.raises(runner.UsageError, match='unknown solve setting'):
    solve_ablation.ablation_table(str(workdir), 'sinewave', 'ipage', [0],
                                  ['no_such=1'], [1.2], 8)
  with pytest.raises(runner.UsageError, match='key=value'):
    solve_ablation.ablation_table(str(workdir), 'sinewave', 'ipage', [0],
                                  ['oversample'], [1.2], 8)
  with pytest.raises(runner.UsageError, match='not a literal'):
    train.override_solve(sinewave_config.get_config().solve,
                         'rank_by=surrogate')


def test_architected_solutions_figure_shows_the_nearest_data_cells(tmp_path):
  """The architected panel: the method's first cells, then the data cells
  whose modulus is nearest the default target (read from the benchmark's
  cache), each captioned with its FEM modulus."""
  task = tasks.get('architected')
  workdir = str(tmp_path)
  rng = np.random.default_rng(0)
  sols = (rng.uniform(size=(3, arch.X_DIM)) > 0.5).astype(np.float32)
  os.makedirs(benchmark.run_dir(workdir, 'architected', 'ipage', 0))
  np.savez(benchmark.solutions_path(workdir, 'architected', 'ipage', 0),
           x=sols, x_posterior=sols)
  # 12 data cells whose moduli are made up: 0.06 (the target) at rows 7, 2.
  y = np.linspace(0.5, 0.6, 12, dtype=np.float32)[:, None]
  y[7], y[2] = 0.06, 0.061
  os.makedirs(os.path.join(workdir, 'data'))
  arch.save_dataset(os.path.join(workdir, 'data', 'architected_12.npz'),
                    np.zeros((12, arch.X_DIM), np.float32), y)
  fig = benchmark.solutions_figure(workdir, task, ['ipage'], data_rows=12)
  axes = np.array(fig.axes).reshape(2, -1)
  assert axes.shape[1] == architected_script.NUM_SHOWN
  fem = np.asarray(task.simulate(sols))[:, 0]
  assert [a.get_title() for a in axes[0, :3]] == [f'FEM {v:.3f}' for v in fem]
  assert [a.get_title() for a in axes[1, :2]] == ['FEM 0.060', 'FEM 0.061']
  # Without the cache the panel has the method's row only.
  assert len(benchmark.solutions_figure(workdir, task, ['ipage'],
                                        data_rows=0).axes) == 3


def test_ablation_targets_are_rows_of_the_runs_data_cache(tmp_path):
  """Architected protocol A of solve_ablation: the held-out targets are
  rows of the run's FEM cache (the script's prepare hook, as the benchmark
  ran it), not the moduli of newly simulated cells."""
  from experiments import solve_ablation
  path = os.path.join(str(tmp_path), 'architected_12.npz')
  y = np.arange(1, 13, dtype=np.float32)[:, None] / 100
  arch.save_dataset(path, np.zeros((12, arch.X_DIM), np.float32), y,
                    pattern=arch.PATTERN, mirror=False)
  config = architected_config.get_config()
  config.data_size, config.data_cache = 12, path
  config.evaluate.heldout_targets = 3
  model = types.SimpleNamespace(config=config, method='ipage')
  targets, _ = solve_ablation.heldout_targets(
      tasks.get('architected'), model, str(tmp_path / 'run'))
  assert targets.shape == (3, 1)
  assert len(np.unique(targets)) == 3 and np.all(np.isin(targets, y))


def test_cached_data_rows_are_training_rows_plus_heldout_targets():
  results = {'settings': {'num_targets': 100},
             'runs': [{'task': 'architected', 'train_rows': 19_900},
                      {'task': 'architected', 'train_rows': 19_900},
                      {'task': 'sinewave', 'train_rows': 9_000}]}
  assert benchmark.cached_data_rows(results, 'architected') == 20_000
  assert benchmark.cached_data_rows(results, 'sinewave') == 9_100
  assert benchmark.cached_data_rows(results, 'robot_arm') == 0


def test_solve_ablation_counts_designs_outside_the_porosity_range():
  """Cells of known porosity (void share of the pixels): all solid (0),
  half void (0.5), all void (1) and 3/4 void (the range's upper end,
  inside) against the architected range 0.25-0.75: two outside."""
  from experiments import solve_ablation
  cells = np.ones((4, 1024), np.float32)
  cells[1, :512] = 0.0
  cells[2] = 0.0
  cells[3, :768] = 0.0
  assert solve_ablation.num_infeasible(tasks.get('architected'), cells) == 2


def test_merged_workdirs_give_the_table_over_their_seeds(tmp_path):
  """Two one-seed workdirs merge into the table over both seeds (mean ±
  sample std of the two Q_A values, computed here by hand), with the run
  directories and data linked; a run in both, or other protocol settings,
  are refused."""
  from experiments import merge_benchmarks

  def source(name, seed, q_a, num_targets=8):
    workdir = tmp_path / name
    settings = benchmark.Settings(str(workdir), num_targets, 8)
    run = {'task': 'sinewave', 'method': 'ipage', 'seed': seed,
           'config_digest': 'd',
           'protocol_a': {'resimulation_error': q_a, 'num_invalid': 0},
           'protocol_b': {'resimulation_error': 2e-3, 'total_s': 1.0,
                          'inference_s': 0.5, 'localization_s': 0.5}}
    info = dict(dataclasses.asdict(settings), tasks=['sinewave'],
                methods=['ipage'], seeds=[seed])
    train.write_json(str(workdir / 'results.json'),
                     {'settings': info, 'runs': [run], 'skipped': []})
    run_dir = benchmark.run_dir(str(workdir), 'sinewave', 'ipage', seed)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, 'metrics.json'), 'w') as f:
      f.write(str(seed))
    os.makedirs(workdir / 'data')
    (workdir / 'data' / f'cache{seed}.npz').write_text(name)
    return str(workdir)

  sources = [source('a', 0, 1e-3), source('b', 1, 3e-3)]
  out = str(tmp_path / 'merged')
  merged = merge_benchmarks.merge_results(sources, out)
  merge_benchmarks.link_sources(merged, out)
  benchmark.write_outputs(out, merged, {'sinewave': tasks.get('sinewave')})
  assert merged['settings']['seeds'] == [0, 1]
  assert merged['settings']['workdir'] == out
  for seed in (0, 1):
    with open(os.path.join(benchmark.run_dir(out, 'sinewave', 'ipage',
                                             seed), 'metrics.json')) as f:
      assert f.read() == str(seed)
    assert os.path.islink(os.path.join(out, 'data', f'cache{seed}.npz'))
  std = np.std([1e-3, 3e-3], ddof=1)
  md = open(os.path.join(out, 'results.md')).read()
  assert f'| ipage | 2.00e-03 ± {std:.1e} |' in md
  # The merged workdir is one a later benchmark run keeps the runs of.
  kept = benchmark.earlier_runs(benchmark.Settings(out, 8, 8),
                                {'sinewave': 'd'}, set())
  assert [r['seed'] for r in kept] == [0, 1]
  with pytest.raises(runner.UsageError, match='in both'):
    merge_benchmarks.merge_results([sources[0], sources[0]], out)
  with pytest.raises(runner.UsageError, match='other protocol settings'):
    merge_benchmarks.merge_results(
        [sources[0], source('c', 2, 1e-3, num_targets=9)], out)
