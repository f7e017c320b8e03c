"""Generates the architected-materials data set (cells + FEM moduli).

  python -m experiments.make_architected_data --out data.npz --num 20000

writes x (N, 1024) float32 cells and y (N, 1) float32 moduli atomically, with
the seed, generator and simulator settings; the file can be passed to
`ipage_jax.tasks.architected.make_dataset(..., cache_path=FILE)`.

  python -m experiments.make_architected_data --benchmark=1,64,256 --num 256

times the FEM (cells/s per batch size, PCG iterations, y quantiles) and
writes nothing.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import train
from ipage_jax.tasks import architected
from ipage_jax.tasks import homogenization

_OUT = flags.DEFINE_string('out', None, 'Output .npz file.')
_NUM = flags.DEFINE_integer('num', architected.DATA_SIZE, 'Number of cells.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_BATCH = flags.DEFINE_integer(
    'batch_size', architected.BATCH_SIZE, 'Cells per compiled FEM call.')
_PATTERN = flags.DEFINE_enum(
    'pattern', architected.PATTERN, architected.PATTERNS, 'Cell family.')
_MIRROR = flags.DEFINE_bool('mirror', False, 'Mirror-symmetric cells.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
_BENCHMARK = flags.DEFINE_list(
    'benchmark', None, 'Batch sizes to time instead of writing data.')


def _benchmark(key, num, batch_sizes):
  """Logs cells/s, PCG iterations and the y distribution."""
  cells = architected.generate_cells(
      key, num, pattern=_PATTERN.value, mirror=_MIRROR.value)
  solve = jax.jit(jax.vmap(homogenization.homogenize))
  for b in batch_sizes:
    count = min(num, 64) if b == 1 else num
    count = max(b, count - count % b)
    if count > num:
      raise ValueError(f'--num={num} is smaller than batch size {b}')
    jax.block_until_ready(solve(cells[:b]))  # compile
    start = time.perf_counter()
    iters, ys = [], []
    for i in range(0, count, b):
      res = solve(cells[i:i + b])
      iters.append(np.asarray(res.iterations))
      ys.append(np.asarray(
          jnp.mean(homogenization.axial_moduli(res.tensor), axis=-1)))
    seconds = time.perf_counter() - start
    iters = np.concatenate(iters)
    rate = count / seconds
    logging.info(
        'batch %d: %d cells in %.1f s = %.1f cells/s; PCG iterations per '
        'load case mean %.1f, max %d; 20k cells %.1f min, 100k %.1f min',
        b, count, seconds, rate, iters.mean(), iters.max(),
        2e4 / rate / 60, 1e5 / rate / 60)
  y = np.concatenate(ys)
  q = np.quantile(y, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
  logging.info('y over %d cells: min %.4g, 5%% %.4g, 25%% %.4g, median %.4g, '
               '75%% %.4g, 95%% %.4g, max %.4g', y.size, *q)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX devices: %s', jax.devices())
  key = jax.random.PRNGKey(_SEED.value)
  try:
    if _NUM.value < 1 or _BATCH.value < 1:
      raise ValueError('--num and --batch_size must be positive')
    if _BENCHMARK.value:
      sizes = [int(v) for v in _BENCHMARK.value]
      if min(sizes) < 1:
        raise ValueError(f'--benchmark sizes must be positive; got {sizes}')
      _benchmark(key, _NUM.value, sizes)
      return
    if not _OUT.value:
      raise ValueError('--out is required (or pass --benchmark)')
    if os.path.exists(_OUT.value) and not _OVERWRITE.value:
      raise ValueError(f'{_OUT.value} exists; pass --overwrite to replace it')
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(2) from e

  start = time.perf_counter()
  x, y = architected.make_dataset(
      key, _NUM.value, batch_size=_BATCH.value,
      progress=train.count_logger('FEM', 'cells', every_s=0.0),
      pattern=_PATTERN.value, mirror=_MIRROR.value)
  architected.save_dataset(
      _OUT.value, x, y, seed=_SEED.value, pattern=_PATTERN.value,
      mirror=_MIRROR.value)
  q = np.quantile(y, [0.0, 0.5, 1.0])
  logging.info('wrote %s: x %s, y %s (min %.4g, median %.4g, max %.4g) in '
               '%.1f s', _OUT.value, x.shape, y.shape, *q,
               time.perf_counter() - start)


if __name__ == '__main__':
  app.run(main)
