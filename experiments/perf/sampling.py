r"""Benchmark of the maximin LHS sampler against other LHS optimizers.

Compares the minimum pairwise distance (larger is better) and the wall time
of `ipage_jax.sampling.maximin_lhs` with plain LHS, pyDOE3's
`lhs(criterion='maximin')` (best of a few random designs), scipy's
`qmc.LatinHypercube(optimization='random-cd')` and SMT's `LHS(criterion=
'ese')` (enhanced stochastic evolutionary optimizer). pyDOE3 and SMT are
optional (`pip install pyDOE3 smt`); their rows are skipped with a note when
they are not installed.

  python -m experiments.perf.sampling
  python -m experiments.perf.sampling --sizes=25x2,1000x6 --repeats=5
  python -m experiments.perf.sampling --ours=default,steps=4096+candidates=8

Our sampler is timed after a warm-up call (same shapes, another key); its
compile time is reported separately. Distances are Euclidean in the unit
cube, computed with scipy's `pdist` in float64. A method whose first run
takes longer than --slow_s is not repeated.
"""

from __future__ import annotations

import datetime
import platform
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from scipy.spatial import distance
from scipy.stats import qmc

from ipage_jax import sampling

_SIZES = flags.DEFINE_list(
    'sizes', ['25x1', '25x2', '1000x2', '1000x6', '1000x64'],
    'Comma-separated NxD sizes.',
)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Seeds per method and size.')
_SEED = flags.DEFINE_integer('seed', 0, 'First seed.')
_METHODS = flags.DEFINE_list(
    'methods', ['ours', 'lhs', 'pydoe3', 'scipy_cd', 'smt_ese'],
    'Methods to run: ours, lhs, pydoe3, scipy_cd, smt_ese.',
)
_OURS = flags.DEFINE_list(
    'ours', ['default'],
    'Variants of our sampler: "default", or integer options key=value '
    'joined by "+", e.g. steps=4096+candidates=8 (steps: num_steps, '
    'candidates: num_candidates; other keys such as q or chunk are passed '
    'as they are).',
)
_SMT_MAX_D = flags.DEFINE_integer(
    'smt_max_d', 64, 'Skip SMT ese above this dimension (it is slow).'
)
_SLOW_S = flags.DEFINE_float(
    'slow_s', 5.0, 'Do not repeat a method whose first run took longer.'
)

_ALIASES = {'steps': 'num_steps', 'candidates': 'num_candidates'}


def parse_size(text):
  """'1000x6' -> (1000, 6)."""
  try:
    n, d = (int(v) for v in text.lower().split('x'))
  except ValueError:
    raise ValueError(f'bad size {text!r}; expected NxD, e.g. 1000x6') from None
  if n < 2 or d < 1:
    raise ValueError(f'bad size {text!r}; need N >= 2 and D >= 1')
  return n, d


def parse_variant(text):
  """'steps=8192+candidates=4' -> {'num_steps': 8192, ...}; 'default' -> {}."""
  if text == 'default':
    return {}
  opts = {}
  for item in text.split('+'):
    name, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'bad option {item!r} in --ours; expected key=value')
    opts[_ALIASES.get(name, name)] = int(value)
  return opts


def min_distance(x):
  """Smallest pairwise Euclidean distance of (n, d) points (float64)."""
  return float(distance.pdist(np.asarray(x, np.float64)).min())


def _pydoe3(seed, n, d):
  import pyDOE3  # pylint: disable=g-import-not-at-top

  return pyDOE3.lhs(d, samples=n, criterion='maximin', seed=seed)


def _scipy_cd(seed, n, d):
  return qmc.LatinHypercube(d=d, optimization='random-cd', rng=seed).random(n)


def _smt_ese(seed, n, d):
  from smt.sampling_methods import LHS  # pylint: disable=g-import-not-at-top

  limits = np.tile(np.array([[0.0, 1.0]]), (d, 1))
  return LHS(xlimits=limits, criterion='ese', seed=seed)(n)


def _ours(opts):
  def run(seed, n, d):
    key = jax.random.PRNGKey(seed)
    return jax.block_until_ready(sampling.maximin_lhs(key, n, d, **opts))

  return run


def _plain_lhs(seed, n, d):
  key = jax.random.PRNGKey(seed)
  return jax.block_until_ready(sampling.lhs(key, n, d))


def _available(module):
  try:
    __import__(module)
  except ImportError:
    return False
  return True


def time_method(fn, n, d, seeds, slow_s, open_cube=False):
  """Runs fn(seed, n, d) per seed. Returns (min distances, seconds)."""
  dists, secs = [], []
  for seed in seeds:
    start = time.perf_counter()
    x = fn(seed, n, d)
    secs.append(time.perf_counter() - start)
    x = np.asarray(x)
    if x.shape != (n, d) or not np.all(np.isfinite(x)):
      raise RuntimeError(f'bad design from {fn}: shape {x.shape}')
    if open_cube and not (np.all(x > 0) and np.all(x < 1)):
      raise RuntimeError(f'design from {fn} leaves the open unit cube')
    dists.append(min_distance(x))
    if secs[-1] > slow_s:
      break
  return np.array(dists), np.array(secs)


def run_benchmark(sizes, methods, variants, repeats, seed, smt_max_d, slow_s):
  """Returns rows (method, n, d, mean min dist, median s, compile s, note)."""
  seeds = list(range(seed, seed + repeats))
  rows = []
  for n, d in sizes:
    for method in methods:
      if method == 'ours':
        for text in variants:
          fn = _ours(parse_variant(text))
          start = time.perf_counter()
          fn(seed + 10_000, n, d)  # warm-up: compiles this shape
          compile_s = time.perf_counter() - start
          dists, secs = time_method(fn, n, d, seeds, slow_s, True)
          name = 'ours' if text == 'default' else f'ours[{text}]'
          rows.append((name, n, d, dists.mean(), np.median(secs), compile_s,
                       ''))
        continue
      if method == 'lhs':
        _plain_lhs(seed + 10_000, n, d)
        fn, note = _plain_lhs, ''
      elif method == 'pydoe3':
        if not _available('pyDOE3'):
          rows.append(('pydoe3', n, d, None, None, None, 'not installed'))
          continue
        fn, note = _pydoe3, ''
      elif method == 'scipy_cd':
        fn, note = _scipy_cd, ''
      elif method == 'smt_ese':
        if not _available('smt'):
          rows.append(('smt_ese', n, d, None, None, None, 'not installed'))
          continue
        if d > smt_max_d:
          rows.append(('smt_ese', n, d, None, None, None,
                       f'skipped (d > --smt_max_d={smt_max_d})'))
          continue
        fn, note = _smt_ese, ''
      else:
        raise ValueError(f'unknown method {method!r}')
      dists, secs = time_method(fn, n, d, seeds, slow_s)
      if len(dists) < len(seeds):
        note = f'{len(dists)} run(s): slow'
      rows.append((method, n, d, dists.mean(), np.median(secs), None, note))
      logging.info('%s %dx%d: min dist %.4f, %.4f s', method, n, d,
                   dists.mean(), np.median(secs))
  return rows


def format_table(rows):
  """Markdown table of run_benchmark rows."""
  lines = ['| n x d | method | min dist | seconds | compile s | note |',
           '|---|---|---|---|---|---|']
  for name, n, d, dist, secs, compile_s, note in rows:
    fmt = lambda v, f: '-' if v is None else f % v
    lines.append(
        f'| {n} x {d} | {name} | {fmt(dist, "%.4f")} | {fmt(secs, "%.4f")} '
        f'| {fmt(compile_s, "%.2f")} | {note} |'
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  try:
    sizes = [parse_size(s) for s in _SIZES.value]
    variants = list(_OURS.value)
    for text in variants:
      parse_variant(text)
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(2) from None
  logging.info('devices: %s', jax.devices())
  rows = run_benchmark(sizes, _METHODS.value, variants, _REPEATS.value,
                       _SEED.value, _SMT_MAX_D.value, _SLOW_S.value)
  print(f'date: {datetime.date.today().isoformat()}, python '
        f'{platform.python_version()}, jax {jax.__version__}, '
        f'{platform.machine()}, backend {jax.default_backend()}, '
        f'repeats {_REPEATS.value} (mean min dist, median seconds)')
  print(format_table(rows))


if __name__ == '__main__':
  app.run(main)
