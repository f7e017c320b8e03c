"""Trains the MoS2 oracle, measures its k-fold error and caches it.

  python -m experiments.train_oracle

runs a 5-fold cross-validation of the oracle (`ipage_jax.oracle`, settings
`ipage_jax.tasks.mos2.ORACLE_SETTINGS`), logs the held-out RMSE / MAE in eV
(all rows, and rows with a non-zero gap), then trains the oracle on all rows
and writes it with that report to the cache file the task loads
(`$IPAGE_CACHE_DIR/mos2_oracle.msgpack`, default `~/.cache/ipage_jax`), plus
a readable copy of the report beside it (`mos2_oracle.json`).

  python -m experiments.train_oracle --folds=3 --epochs=20 --subset=3000 \
      --out=cache/oracle.msgpack

is a quick check (a subset or changed settings need --out, so that the
task's cached oracle is never replaced by a smaller one by accident).
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from ipage_jax import checkpoint
from ipage_jax import oracle
from ipage_jax.tasks import mos2

_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Cache directory (default: $IPAGE_CACHE_DIR or '
    '~/.cache/ipage_jax).')
_OUT = flags.DEFINE_string(
    'out', None, 'Oracle file (default: the task cache file).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing file.')
_FOLDS = flags.DEFINE_integer('folds', 5, 'k of the k-fold error (0: skip).')
_SUBSET = flags.DEFINE_integer(
    'subset', 0, 'Use this many random rows (0: all); needs --out.')
_SEED = flags.DEFINE_integer('seed', mos2.ORACLE_SEED, 'PRNG seed.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 25, 'Epochs between logs.')
_MEMBERS = flags.DEFINE_integer('members', None, 'Ensemble size.')
_HIDDEN = flags.DEFINE_integer('hidden', None, 'Hidden width.')
_DEPTH = flags.DEFINE_integer('depth', None, 'Dense layers per member.')
_EPOCHS = flags.DEFINE_integer('epochs', None, 'Training epochs.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Batch size.')
_LR = flags.DEFINE_float('learning_rate', None, 'Initial learning rate.')
_FINAL_LR = flags.DEFINE_float('final_learning_rate', None, 'Final lr.')


def _overrides() -> dict:
  pairs = (('members', _MEMBERS), ('hidden', _HIDDEN), ('depth', _DEPTH),
           ('epochs', _EPOCHS), ('batch_size', _BATCH),
           ('learning_rate', _LR), ('final_learning_rate', _FINAL_LR))
  return {name: f.value for name, f in pairs if f.value is not None}


def _progress(label: str, epochs: int):
  start = time.perf_counter()

  def progress(epoch, metrics):
    if epoch == 0 or (epoch + 1) % _LOG_EVERY.value == 0 \
        or epoch + 1 == epochs:
      fold = metrics.get('fold')
      where = label if fold is None else f'{label} fold {int(fold)}'
      logging.info('%s epoch %d/%d: loss %.5f, monitor %.5f (standardized '
                   'MSE), %.1f s', where, epoch + 1, epochs, metrics['loss'],
                   metrics['val_loss'], time.perf_counter() - start)
  return progress


def _write_json(path: str, report: dict) -> None:
  checkpoint.write_atomic(
      path, json.dumps(report, indent=2, sort_keys=True).encode())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX devices: %s', jax.devices())
  overrides = _overrides()
  try:
    settings = oracle.make_settings(**dict(mos2.ORACLE_SETTINGS,
                                           **overrides))
    custom = bool(overrides) or _SUBSET.value != 0 \
        or _SEED.value != mos2.ORACLE_SEED
    if custom and _OUT.value is None:
      raise ValueError('--subset, --seed or changed settings need --out '
                       '(the task cache keeps the default oracle)')
    out = _OUT.value or mos2.oracle_path(_CACHE_DIR.value)
    if os.path.exists(out) and not _OVERWRITE.value:
      raise ValueError(f'{out} exists; pass --overwrite to replace it')
    if _FOLDS.value < 0 or _FOLDS.value == 1:
      raise ValueError(f'--folds must be 0 or >= 2, got {_FOLDS.value}')
    if _SUBSET.value < 0 or _SUBSET.value > mos2.DATA_SIZE:
      raise ValueError(f'--subset must be in [0, {mos2.DATA_SIZE}]')
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(2) from e

  key = jax.random.PRNGKey(_SEED.value)
  if _SUBSET.value:
    x, y = mos2.make_dataset(jax.random.fold_in(key, 2), _SUBSET.value)
  else:
    x, y = mos2.load_data()
  kw = settings._asdict()
  report = {'task': mos2.NAME, 'seed': _SEED.value, 'num_rows': len(x),
            'settings': kw, 'units': 'eV'}
  if _FOLDS.value:
    start = time.perf_counter()
    cv = oracle.kfold_error(
        jax.random.fold_in(key, 1), x, y, k=_FOLDS.value,
        progress=_progress('k-fold', settings.epochs), **kw)
    cv.pop('predictions')
    cv.pop('settings')
    cv['seconds'] = time.perf_counter() - start
    report['kfold'] = cv
    logging.info(
        '%d-fold held-out error (eV): RMSE %.4f, MAE %.4f; non-zero rows '
        '(%d): RMSE %.4f, MAE %.4f; trivial predictor (mean) RMSE %.4f; '
        'per-fold RMSE %s', cv['k'], cv['rmse'], cv['mae'],
        cv['num_nonzero'], cv['rmse_nonzero'], cv['mae_nonzero'],
        cv['std_y'], np.round([f['rmse'] for f in cv['per_fold']], 4))

  start = time.perf_counter()
  model = oracle.fit_oracle(key, x, y,
                            progress=_progress('final', settings.epochs),
                            **kw)
  report['fit_seconds'] = time.perf_counter() - start
  pred = np.asarray(oracle.predict(model, x))
  report['train_rmse'] = float(np.sqrt(np.mean((pred - y) ** 2)))
  logging.info('final oracle on %d rows in %.1f s, training RMSE %.4f eV',
               len(x), report['fit_seconds'], report['train_rmse'])
  oracle.save_oracle(out, model, report)
  json_path = os.path.splitext(out)[0] + '.json'
  _write_json(json_path, report)
  logging.info('wrote %s and %s', out, json_path)


if __name__ == '__main__':
  app.run(main)
