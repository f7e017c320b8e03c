"""Shared command line of the per-task scripts (`python -m experiments.<task>`).

  python -m experiments.sinewave --workdir runs/sinewave
  python -m experiments.robot_arm --workdir runs/arm --target 1.5,0.2 \
      --num_solutions 200 --config.train.epochs=100

Writes to --workdir: config.json, model.msgpack (the fitted model),
checkpoints/, solutions.npz (x, x_posterior, y_surrogate, y_target),
metrics.json (re-simulation error where the task has a simulator, timings,
settings) and the task's figures. Bad input stops with a one-line error and
exit code 2 before anything is written.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import time
from typing import Callable, Optional

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

from ipage_jax import methods
from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import metrics
from ipage_jax import plotting
from ipage_jax import tasks

_SAMPLERS = ('maximin_lhs', 'lhs', 'srs')

flags.DEFINE_string('workdir', None, 'Output directory (created).')
flags.DEFINE_string('method', 'ipage', f'One of {methods.NAMES}.')
flags.DEFINE_string('target', None,
                    "Comma-separated target y* (default: the task's).")
flags.DEFINE_string('target_file', None, '.npy file of targets, shape (T, M).')
flags.DEFINE_integer('num_solutions', 1000, 'Solutions per target.')
flags.DEFINE_string('sampler', None,
                    f'Latent sampler, one of {_SAMPLERS} (default: config).')
flags.DEFINE_integer('seed', None, 'Root seed (default: config.seed).')
flags.DEFINE_integer('epochs', None, 'Training epochs (default: config).')
flags.DEFINE_bool('quick', False, 'Tiny settings for smoke tests.')
flags.DEFINE_bool('reuse_checkpoint', False,
                  'Reuse the model in --workdir, or resume its training.')

FLAGS = flags.FLAGS
MODEL_FILE = 'model.msgpack'
# report(task, method, model, key, run, workdir) -> dict of extra metrics
Report = Callable[..., dict]


class UsageError(ValueError):
  """Bad command-line input (exit code 2, nothing written)."""


def augmentation(task, config):
  """The task's `augment` when `config.train.augment` asks for it, else None.

  Raises:
    UsageError: augmentation asked for a task without symmetries.
  """
  if not config.train.get('augment', False):
    return None
  if task.augment is None:
    raise UsageError(f'config.train.augment is set, but task {task.name!r} '
                     'has no augment function')
  return task.augment


@dataclasses.dataclass
class Run:
  """The resolved settings of one invocation."""
  task: tasks.Task
  method: methods.Method
  config: ml_collections.ConfigDict
  targets: np.ndarray        # (M,) or (T, M)
  num_solutions: int
  sampler: str
  seed: int
  workdir: str


def parse_targets(task: tasks.Task, target: Optional[str],
                  target_file: Optional[str]) -> np.ndarray:
  """Targets from the flags: (M,) for one, (T, M) from a file."""
  if target is not None and target_file is not None:
    raise UsageError('give --target or --target_file, not both')
  if target_file is not None:
    try:
      values = np.load(target_file)
    except (OSError, ValueError) as e:
      raise UsageError(f'cannot read --target_file {target_file!r}: {e}')
    if values.ndim != 2 or values.shape[1] != task.y_dim or not len(values):
      raise UsageError(f'--target_file must hold an array of shape (T, '
                       f'{task.y_dim}), got {values.shape}')
  elif target is not None:
    try:
      values = np.array([float(v) for v in target.split(',')])
    except ValueError:
      raise UsageError(f'--target {target!r} is not a comma-separated list '
                       'of numbers')
    if values.shape != (task.y_dim,):
      raise UsageError(f'--target has {values.size} value(s); task '
                       f'{task.name!r} needs {task.y_dim}')
  else:
    values = np.asarray(task.default_target)
  if not np.isfinite(values).all():
    raise UsageError('targets contain NaN or inf')
  return values.astype(np.float32)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: ml_collections.ConfigDict) -> None:
  """Sets every leaf of `overrides` at the same path in `config`."""
  for name, value in overrides.items():
    if name not in config:
      raise UsageError(f'config override {name!r} names no config field')
    if isinstance(value, ml_collections.ConfigDict):
      apply_overrides(config[name], value)
    else:
      config[name] = value


def resolve(task_name: str) -> Run:
  """Validates every flag and builds the run settings (writes nothing)."""
  if not FLAGS.workdir:
    raise UsageError('--workdir is required')
  try:
    task = tasks.get(task_name)
    method = methods.get(FLAGS.method)
  except ValueError as e:
    raise UsageError(str(e))
  config = FLAGS.config if 'config' in FLAGS else None
  if config is None:
    module = importlib.import_module(f'experiments.configs.{task_name}')
    config = module.get_config()
  config = ml_collections.ConfigDict(config.to_dict())  # private copy
  if FLAGS.quick:
    apply_overrides(config, config.quick)
  if FLAGS.epochs is not None:
    if FLAGS.epochs < 1:
      raise UsageError(f'--epochs must be >= 1, got {FLAGS.epochs}')
    config.train.epochs = FLAGS.epochs
  if FLAGS.num_solutions < 1:
    raise UsageError(f'--num_solutions must be >= 1, got {FLAGS.num_solutions}')
  sampler = FLAGS.sampler or config.solve.sampler
  if sampler not in _SAMPLERS:
    raise UsageError(f'unknown sampler {sampler!r}; expected one of '
                     f'{_SAMPLERS}')
  seed = config.seed if FLAGS.seed is None else FLAGS.seed
  config.seed = seed
  targets = parse_targets(task, FLAGS.target, FLAGS.target_file)
  return Run(task, method, config, targets, FLAGS.num_solutions, sampler,
             seed, FLAGS.workdir)


write_atomic = checkpoint.write_atomic


def write_json(path: str, value) -> None:
  write_atomic(path, json.dumps(value, indent=2, default=_json_default)
               .encode())


def write_npz(path: str, **arrays) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_atomic(path, buffer.getvalue())


def _json_default(value):
  if isinstance(value, (np.ndarray, jnp.ndarray)):
    return np.asarray(value).tolist()
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return str(value)


def fit_or_load(run: Run, key: jax.Array, x: np.ndarray, y: np.ndarray):
  """Trains the method's model (or reuses the saved one); saves it."""
  model_path = os.path.join(run.workdir, MODEL_FILE)
  if FLAGS.reuse_checkpoint and os.path.exists(model_path):
    logging.info('Reusing the model in %s', model_path)
    return run.method.load(model_path), 0.0
  ckpt_dir = os.path.join(run.workdir, 'checkpoints')
  if not FLAGS.reuse_checkpoint and os.path.isdir(ckpt_dir):
    for name in os.listdir(ckpt_dir):  # start afresh: stale state of ours
      os.remove(os.path.join(ckpt_dir, name))
  start = time.perf_counter()
  log_every = run.config.log_every

  def progress(epoch, m):
    if epoch < 3 or (epoch + 1) % log_every == 0:
      rate = (epoch + 1) / max(time.perf_counter() - start, 1e-9)
      logging.info('epoch %d/%d  %s  (%.1f epochs/s)', epoch + 1,
                   run.config.train.epochs,
                   '  '.join(f'{k}={v:.4g}' for k, v in sorted(m.items())),
                   rate)

  model = run.method.fit(key, x, y, run.config, checkpoint_dir=ckpt_dir,
                         progress=progress,
                         augment=augmentation(run.task, run.config))
  fit_s = time.perf_counter() - start
  if getattr(model, 'diverged', False):
    logging.warning('Training diverged; using the last finite parameters.')
  run.method.save(model_path, model)
  return model, fit_s


def evaluate(run: Run, sols) -> dict:
  """Re-simulation error of the solutions (where the task can simulate)."""
  if run.task.simulate is None:
    return {}
  x = sols.x.reshape(-1, run.task.x_dim)
  targets = np.broadcast_to(
      np.asarray(sols.y_target)[..., None, :],
      sols.x.shape[:-1] + (run.task.y_dim,)).reshape(-1, run.task.y_dim)
  err = metrics.resimulation_error(run.task.simulate, x, targets)
  per = np.asarray(err.per_sample)
  label = ('resimulation_error_vs_oracle' if run.task.simulator_kind ==
           'oracle' else 'resimulation_error')
  return {label: float(err.mean), f'{label}_std': float(np.nanstd(per)),
          f'{label}_median': float(np.nanmedian(per)),
          'num_invalid_resimulations': int(err.num_invalid)}


def execute(run: Run, report: Optional[Report] = None) -> dict:
  """Runs data -> fit -> solve -> evaluate -> write; returns the metrics."""
  root = jax.random.PRNGKey(run.seed)
  key_data, key_fit, key_solve, key_report = jax.random.split(root, 4)
  x, y = run.task.make_dataset(key_data, run.config.data_size or None)
  x, y = data_lib.check_pairs(x, y)  # bad data stops before any write
  os.makedirs(run.workdir, exist_ok=True)
  write_json(os.path.join(run.workdir, 'config.json'), run.config.to_dict())
  logging.info('Task %s: %d rows, x %s, y %s; method %s', run.task.name,
               x.shape[0], x.shape[1:], y.shape[1:], run.method.name)
  model, fit_s = fit_or_load(run, key_fit, x, y)

  sols = run.method.solve(model, key_solve, run.targets, run.num_solutions,
                          run.sampler, solve_config=run.config.solve)
  result = {
      'task': run.task.name, 'method': run.method.name, 'seed': run.seed,
      'sampler': run.sampler, 'num_solutions': run.num_solutions,
      'targets': run.targets, 'data_rows': int(x.shape[0]),
      'fit_s': fit_s, 'inference_s': sols.inference_s,
      'localization_s': sols.localization_s,
      'surrogate_error': float(np.mean(sols.surrogate_error)),
      'diversity': float(metrics.diversity(
          jnp.asarray(sols.x.reshape(-1, run.task.x_dim)[:2000]))),
      'simulator': run.task.simulator_kind if run.task.simulate else None,
  }
  result.update(evaluate(run, sols))
  if getattr(model, 'history', None):
    plotting.training_curves(model.history).savefig(
        os.path.join(run.workdir, 'training_curves.png'), dpi=110)
  if report is not None:
    result.update(report(run=run, model=model, sols=sols, key=key_report))
  write_npz(os.path.join(run.workdir, 'solutions.npz'), x=sols.x,
            x_posterior=sols.x_posterior, y_surrogate=sols.y_surrogate,
            y_target=sols.y_target)
  write_json(os.path.join(run.workdir, 'metrics.json'), result)
  for name in sorted(result):
    if isinstance(result[name], float):
      logging.info('%s = %.6g', name, result[name])
  return result


def make_main(task_name: str, report: Optional[Report] = None,
              check_targets: Optional[Callable[[np.ndarray], object]] = None,
              prepare: Optional[Callable[[Run], Run]] = None):
  """The absl `main` of the script for `task_name`.

  Also defines `--config`, defaulting to `experiments/configs/<task>.py`, so
  fields can be overridden from the shell (`--config.train.epochs=5`).

  Args:
    task_name: registry name of the task.
    report: optional hook `report(run=, model=, sols=, key=) -> dict` of
      extra metrics (figures go to `run.workdir`).
    check_targets: optional task-specific check of the (M,) or (T, M)
      targets; raises ValueError (exit code 2, nothing written) or warns.
    prepare: optional `prepare(run) -> run` applied to the resolved run
      before it executes (e.g. to give the task a data cache).
  """
  config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs',
                             f'{task_name}.py'),
      'ml_collections config file (get_config()).')

  def main(argv):
    if len(argv) > 1:
      raise SystemExit(f'error: unexpected arguments {argv[1:]}')
    try:
      run = resolve(task_name)
      if check_targets is not None:
        check_targets(run.targets)
      if prepare is not None:
        run = prepare(run)
      logging.info('JAX devices: %s', jax.devices())
      execute(run, report)
    except ValueError as e:  # UsageError and library input errors
      logging.error('%s', e)
      print(f'error: {e}', flush=True)
      raise SystemExit(2)

  return main
