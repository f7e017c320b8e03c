r"""Calibration of sampled posteriors: SBC ranks and expected coverage.

  python -m experiments.calibration --task sinewave --workdir runs/calib \
      --model inn=runs/sinewave/model \
      --model cinn=runs/sinewave_cinn/model \
      --model 'inn=runs/sinewave/model posterior_keep=1.0'

For T held-out pairs (x_t, y_t) drawn from the task's data generator (a seed
no training run uses), each model draws L posterior samples for y_t without
localization (`inn` is iPage's INN posterior; the model's own solve
settings, with the `key=value` overrides that follow the path, e.g.
`posterior_keep=1.0`), and `metrics.calibration`
ranks x_t among them (simulation-based calibration) and measures the
coverage of central and highest-density credible regions. With
`--exact_tol` > 0 a reference posterior by rejection sampling from the
prior (||Omega(x) - y_t||_inf < tol, `metrics.rejection_posterior`) is
evaluated the same way. Writes `calibration.json` (per method: rank
p-values, coverage at every level, re-simulation error of the samples) and
`calibration.png` (`plotting.calibration`) to --workdir.
"""

import os
from typing import NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import train
from ipage_jax import methods
from ipage_jax import metrics
from ipage_jax import plotting
from ipage_jax import tasks

_TASK = flags.DEFINE_string('task', 'sinewave', 'Task name.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
_MODELS = flags.DEFINE_multi_string(
    'model', [], "'method=path [key=value ...]': a saved model (the model/ "
    'directory of a task script run or a benchmark cache) and overrides of '
    'its solve settings; repeatable.')
_TARGETS = flags.DEFINE_integer('num_targets', 300, 'Held-out pairs T.')
_SAMPLES = flags.DEFINE_integer('num_samples', 99,
                                'Posterior samples L per target.')
_BINS = flags.DEFINE_integer('num_bins', 10, 'Rank histogram bins.')
_EXACT_TOL = flags.DEFINE_float(
    'exact_tol', 0.0, 'Tolerance of the rejection reference posterior '
    '(0: none).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the held-out pairs and '
                             'of the posterior draws.')
_SAMPLER = flags.DEFINE_string('sampler', 'srs', 'Latent design. SBC '
                               'assumes independent draws: srs.')

# Held-out pairs come from this data seed, which no training run uses.
_DATA_SEED = 9_000_001


class ModelSpec(NamedTuple):
  """One posterior to calibrate: a method's saved model, solve overrides."""
  method: str
  path: str
  overrides: str   # 'key=value ...' of `train.override_solve`


def parse_models(specs) -> dict[str, ModelSpec]:
  """["method=path [key=value ...]", ...] -> {label: ModelSpec}, checked.

  The label is the method, followed by the overrides when there are any.
  """
  models = {}
  for spec in specs:
    name, sep, rest = spec.partition('=')
    path, _, overrides = rest.strip().partition(' ')
    if not sep or not name or not path:
      raise app.UsageError(f'--model {spec!r} is not method=path')
    methods.get(name)  # unknown names fail here
    if not os.path.exists(path):
      raise app.UsageError(f'--model {spec!r}: no file {path!r}')
    label = f'{name} ({overrides.strip()})' if overrides.strip() else name
    if label in models:
      raise app.UsageError(f'--model {label!r} given twice')
    models[label] = ModelSpec(name, path, overrides.strip())
  return models


def summary(task, cal: metrics.Calibration, samples, y) -> dict:
  """JSON-able digest of one method's calibration."""
  levels = np.asarray(cal.levels)
  out = {
      'rank_p_value': np.asarray(cal.rank_p_value).tolist(),
      'levels': levels.tolist(),
      'central_coverage': np.asarray(cal.central_coverage).tolist(),
      'hpd_coverage': np.asarray(cal.hpd_coverage).tolist(),
      # Mean |coverage - level| over the levels: 0 when calibrated.
      'central_coverage_error': float(np.mean(np.abs(
          np.asarray(cal.central_coverage) - levels[:, None]))),
      'hpd_coverage_error': float(np.mean(np.abs(
          np.asarray(cal.hpd_coverage) - levels))),
  }
  if task.simulate is not None:
    flat = samples.reshape(-1, task.x_dim)
    targets = np.repeat(y, samples.shape[1], axis=0)
    err = metrics.resimulation_error(task.simulate, flat, targets)
    out['resimulation_error'] = float(err.mean)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  task = tasks.get(_TASK.value)
  models = parse_models(_MODELS.value)
  if not models and not _EXACT_TOL.value:
    raise app.UsageError('nothing to evaluate: give --model or --exact_tol')
  key = jax.random.PRNGKey(_SEED.value)
  x_true, y = task.make_dataset(jax.random.PRNGKey(_DATA_SEED),
                                _TARGETS.value)
  posteriors = {}
  for label, spec in models.items():
    method = methods.get(spec.method)
    model = methods.load_model(spec.path, spec.method)
    try:
      solve_config = train.override_solve(model.config.solve, spec.overrides)
    except train.UsageError as e:
      raise app.UsageError(f'--model {label!r}: {e}') from e
    logging.info('%s: %d x %d posterior samples', label, len(y),
                 _SAMPLES.value)
    sols = method.solve(model, key, y, _SAMPLES.value, _SAMPLER.value,
                        solve_config=solve_config, simulate=task.simulate,
                        repair=task.repair, feasible=task.feasible)
    posteriors[label] = np.asarray(sols.x_posterior)
  if _EXACT_TOL.value > 0:
    logging.info('rejection reference, tol %g', _EXACT_TOL.value)
    posteriors['exact (rejection)'] = metrics.rejection_posterior(
        key, task.sample_prior, task.simulate, y, _SAMPLES.value,
        _EXACT_TOL.value)
  results, report = {}, {}
  for name, samples in posteriors.items():
    results[name] = metrics.calibration(x_true, samples,
                                        num_bins=_BINS.value)
    report[name] = summary(task, results[name], samples, y)
    logging.info('%s: rank p-values %s, coverage error central %.3f, '
                 'HPD %.3f', name, np.round(report[name]['rank_p_value'], 4),
                 report[name]['central_coverage_error'],
                 report[name]['hpd_coverage_error'])
  os.makedirs(_WORKDIR.value, exist_ok=True)
  train.write_json(os.path.join(_WORKDIR.value, 'calibration.json'), {
      'task': task.name, 'num_targets': len(y), 'num_samples': _SAMPLES.value,
      'models': {k: v._asdict() for k, v in models.items()},
      'exact_tol': _EXACT_TOL.value, 'results': report})
  names = list(task.x_names) or [f'x{i + 1}' for i in range(task.x_dim)]
  plotting.calibration(
      results, names, title=f'{task.name}: calibration of the posteriors '
      f'(T = {len(y)}, L = {_SAMPLES.value})').savefig(
          os.path.join(_WORKDIR.value, 'calibration.png'), dpi=110)


if __name__ == '__main__':
  app.run(main)
