"""Shared command line of the per-task scripts (`python -m experiments.<task>`).

  python -m experiments.sinewave --workdir runs/sinewave
  python -m experiments.robot_arm --workdir runs/arm --target 1.5,0.2 \
      --num_solutions 200 --config.train.epochs=100

Every flag but --workdir and --quick sets a field of the config (FLAG_FIELDS:
`--epochs 5` is `--config.train.epochs=5`); `--quick` applies the config's
own `quick` section first, so explicit flags and `--config.*` overrides win
over it. The run itself is `train.train_and_evaluate(config, workdir)`.

Writes to --workdir: config.json, model/ (the fitted model, an orbax
checkpoint) and model.json (its fingerprint), solutions.npz (x,
x_posterior, y_surrogate, y_target), metrics.json (re-simulation error
where the task has a simulator, timings, settings) and the task's figures.
Bad input stops with a one-line error and exit code 2 before anything is
written.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import train
from ipage_jax import methods

UsageError = train.UsageError

flags.DEFINE_string('workdir', None, 'Output directory (created).')
flags.DEFINE_string('method', None, f'Method, one of {methods.NAMES} '
                    '(config: run.method, default ipage).')
flags.DEFINE_string('target', None, "Comma-separated target y* (config: "
                    "run.target; default: the task's).")
flags.DEFINE_string('target_file', None, '.npy file of targets, shape (T, M) '
                    '(config: run.target_file).')
flags.DEFINE_integer('num_solutions', None, 'Solutions per target (config: '
                     'run.num_solutions, default 1000).')
flags.DEFINE_string('sampler', None, 'Latent sampler: maximin_lhs, lhs or '
                    'srs (config: solve.sampler).')
flags.DEFINE_integer('seed', None, 'Root seed (config: seed).')
flags.DEFINE_integer('epochs', None, 'Training epochs (config: '
                     'train.epochs).')
flags.DEFINE_bool('quick', False, "Tiny settings for smoke tests (the "
                  "config's `quick` section).")
flags.DEFINE_bool('reuse_checkpoint', None, 'Reuse the model in --workdir '
                  'when it was trained with the same settings, or resume '
                  'its training (config: run.reuse_model).')

FLAGS = flags.FLAGS
# Flag -> the config field it sets (when given).
FLAG_FIELDS = {
    'method': 'run.method',
    'target': 'run.target',
    'target_file': 'run.target_file',
    'num_solutions': 'run.num_solutions',
    'reuse_checkpoint': 'run.reuse_model',
    'sampler': 'solve.sampler',
    'seed': 'seed',
    'epochs': 'train.epochs',
}


def resolve_config(task_name: str,
                   config: Optional[ml_collections.ConfigDict] = None,
                   ignore: tuple[str, ...] = ()
                   ) -> ml_collections.ConfigDict:
  """The run's config from the flags (a private copy; writes nothing).

  Args:
    task_name: the task of the script.
    config: the parsed `--config` (default: `FLAGS.config`, or the task's
      config file when no such flag is defined).
    ignore: flags of FLAG_FIELDS not to apply.
  """
  if config is None:
    config = FLAGS.config if 'config' in FLAGS else None
  if config is None:
    config = _config_file(task_name)
  config = ml_collections.ConfigDict(config.to_dict())
  config.lock()
  try:
    if FLAGS.quick:
      config.update(config.quick.to_dict())
      if 'config' in FLAGS:  # explicit --config.* overrides win over --quick
        config.update_from_flattened_dict(
            config_flags.get_override_values(FLAGS['config']))
    config.update_from_flattened_dict({
        field: FLAGS[name].value for name, field in FLAG_FIELDS.items()
        if name not in ignore and FLAGS[name].value is not None})
    config.run.task = task_name
  except (KeyError, TypeError) as e:
    raise UsageError(f'bad setting: {e}') from e
  config.unlock()
  return config


def _config_file(task_name: str) -> ml_collections.ConfigDict:
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(
      f'experiments.configs.{task_name}').get_config()


def resolve(task_name: str) -> tuple[ml_collections.ConfigDict, np.ndarray]:
  """Validates every flag and setting: (config, targets); writes nothing."""
  config = resolve_config(task_name)
  _, targets = train.check(config, FLAGS.workdir)
  return config, targets


def _help(task_name: str) -> str:
  """The `--config` flag's help: where the fields are."""
  config = _config_file(task_name)
  nested = lambda v: isinstance(v, ml_collections.ConfigDict)
  fields = ', '.join(k for k, v in config.items() if not nested(v))
  sections = ', '.join(f'{k}.*' for k, v in config.items() if nested(v))
  return (f'ml_collections config file (default: experiments/configs/'
          f'{task_name}.py). Override any field from the shell, e.g. '
          f'--config.train.epochs=5. Fields: {fields}, {sections} '
          '(documented in experiments/configs/default.py and '
          'ipage_jax/pipeline.py, default_config).')


def make_main(task_name: str, hooks: train.Hooks = train.Hooks()):
  """The absl `main` of the script for `task_name`.

  Also defines `--config`, defaulting to `experiments/configs/<task>.py`,
  and makes the shared flags the script's own, so that its `--help` lists
  them.

  Args:
    task_name: registry name of the task.
    hooks: the script's additions to the run (data cache, target check,
      report).
  """
  config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs',
                             f'{task_name}.py'), _help(task_name))
  for name in ('workdir', 'quick', 'config', *FLAG_FIELDS):  # --help's
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])

  def main(argv):
    if len(argv) > 1:
      raise SystemExit(f'error: unexpected arguments {argv[1:]}')
    try:
      config, _ = resolve(task_name)
      logging.info('JAX devices: %s', jax.devices())
      train.train_and_evaluate(config, FLAGS.workdir, hooks)
    except ValueError as e:  # UsageError and library input errors
      logging.error('%s', e)
      print(f'error: {e}', flush=True)
      raise SystemExit(2)

  return main
