r"""Scaling: localization throughput and memory vs samples, FEM cells/s.

Every measurement runs in its own subprocess, so that its peak resident
memory (`resource.getrusage(...).ru_maxrss`) is its own, with
`XLA_FLAGS=--xla_force_host_platform_device_count=K` for K (fake CPU)
devices. Times are wall seconds after compilation (compiled ahead of time,
reported apart).

1. Localization (`parallel.localize_sharded`) of n samples for --steps Adam
   steps through a small INN surrogate (x 2, y 1, width 4, 4 GLOW blocks,
   subnets 3 x 64 ReLU; random weights), for n in --sizes, in one call and
   in chunks of --chunk rows: sample-steps/s, peak RSS, and its growth
   during the run.
2. The same at n = --device_size on each device count of --devices (rows
   split over the devices).
3. FEM data generation (`tasks.architected`): --fem_cells 32 x 32 cells,
   `make_dataset` (generate + homogenize, batch 64) and the homogenization
   alone through `parallel.map_rows` (64 cells per device per call) on each
   device count of --devices.

Finally the memory per sample (slope of peak RSS between the two largest
sizes) and the largest n that fits in --memory_gib, with and without
chunking. Run:

  python -m experiments.perf.scaling
  python -m experiments.perf.scaling --sizes=1000,10000 --fem_cells=128
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

_SIZES = flags.DEFINE_list('sizes', ['1000', '10000', '100000', '1000000'],
                           'Sample counts localized.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Adam steps per localization.')
_CHUNK = flags.DEFINE_integer('chunk', 10_000, 'Rows per chunked call.')
_DEVICES = flags.DEFINE_list('devices', ['1', '2'],
                             'Device counts of tables 2 and 3.')
_DEVICE_SIZE = flags.DEFINE_integer('device_size', 100_000,
                                    'Samples of table 2.')
_FEM_CELLS = flags.DEFINE_integer('fem_cells', 256, 'Cells of table 3.')
_MEMORY_GIB = flags.DEFINE_float('memory_gib', 24.0,
                                 'Memory of the estimate of the largest n.')
_HIDDEN = flags.DEFINE_integer('hidden', 64, 'Subnet width of the INN.')
# Internal: one measurement in this (child) process.
_CHILD = flags.DEFINE_string('child', '', 'Internal: loc | fem | dataset.')
_N = flags.DEFINE_integer('n', 0, 'Internal: rows of the measurement.')
_CHILD_CHUNK = flags.DEFINE_integer('child_chunk', 0, 'Internal: chunk.')
_CHILD_DEVICES = flags.DEFINE_integer('child_devices', 1,
                                      'Internal: devices.')

_FEM_BATCH = 64


def _max_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


def _child_loc(n: int, chunk: int, num_devices: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from ipage_jax import flows, localization, parallel

  inn = flows.INN(x_dim=2, y_dim=1, z_dim=3, num_blocks=4,
                  hidden=_HIDDEN.value, depth=3, activation='relu',
                  coupling='glow', clamp=2.0)
  params = inn.init(jax.random.PRNGKey(0), jnp.zeros((1, inn.width)))

  def forward(p, x):
    return inn.split_output(inn.apply(p, inn.pad_x(x))[0])[0]

  localizer = localization.make_localizer(
      forward, steps=_STEPS.value, learning_rate=1e-2,
      bounds=([-3.0, -3.0], [3.0, 3.0]))
  x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (n, 2)))
  y = np.array([0.5], np.float32)
  mesh = parallel.make_mesh(num_devices) if num_devices > 1 else None
  # Compile the one chunk shape ahead of time (localize_sharded then hits
  # the cache), with the shardings the run will use.
  _, per_chunk = parallel.chunk_plan(n, chunk, num_devices)
  xc, pc, yc = x0[:1].repeat(per_chunk, 0), params, y
  if mesh is not None:
    xc = parallel.shard_rows(xc, mesh)
    pc, yc = parallel.replicate((params, y), mesh)
  start = time.perf_counter()
  localizer.lower(pc, xc, yc).compile()
  compile_s = time.perf_counter() - start
  base = _max_rss_gib()
  start = time.perf_counter()
  result = parallel.localize_sharded(localizer, params, x0, y, mesh, chunk)
  jax.block_until_ready(result.x)
  wall = time.perf_counter() - start
  return dict(n=n, chunk=chunk, devices=num_devices, wall_s=wall,
              compile_s=compile_s,
              sample_steps_per_s=n * _STEPS.value / wall,
              peak_gib=_max_rss_gib(), base_gib=base,
              mean_loss=float(np.mean(result.loss)))


def _child_fem(n: int, num_devices: int) -> dict:
  import jax
  import numpy as np
  from ipage_jax import parallel
  from ipage_jax.tasks import architected, homogenization

  cells = np.asarray(architected.generate_cells(jax.random.PRNGKey(0), n))
  fn = jax.jit(lambda _, c: homogenization.effective_modulus(c))
  mesh = parallel.make_mesh(num_devices) if num_devices > 1 else None
  per_call = _FEM_BATCH * num_devices
  start = time.perf_counter()
  parallel.map_rows(fn, None, cells[:per_call], mesh=mesh,
                    chunk_size=per_call)  # compile
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  y = parallel.map_rows(fn, None, cells, mesh=mesh, chunk_size=per_call)
  wall = time.perf_counter() - start
  return dict(n=n, devices=num_devices, wall_s=wall, compile_s=compile_s,
              cells_per_s=n / wall, finite=bool(np.isfinite(y).all()),
              peak_gib=_max_rss_gib())


def _child_dataset(n: int) -> dict:
  import jax
  from ipage_jax.tasks import architected

  start = time.perf_counter()
  architected.make_dataset(jax.random.PRNGKey(1), _FEM_BATCH)  # compile
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  architected.make_dataset(jax.random.PRNGKey(0), n, batch_size=_FEM_BATCH)
  wall = time.perf_counter() - start
  return dict(n=n, devices=1, wall_s=wall, compile_s=compile_s,
              cells_per_s=n / wall, peak_gib=_max_rss_gib())


def _run_child(kind: str, n: int, chunk: int = 0, devices: int = 1) -> dict:
  """Runs one measurement in a fresh process; returns its result dict."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={devices}')
  cmd = [sys.executable, '-m', 'experiments.perf.scaling', f'--child={kind}',
         f'--n={n}', f'--child_chunk={chunk}', f'--child_devices={devices}',
         f'--steps={_STEPS.value}', f'--hidden={_HIDDEN.value}']
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  result = json.loads(lines[-1][len('RESULT '):])
  print(f'  {kind} n={n} chunk={chunk} devices={devices}: '
        f'{result["wall_s"]:.2f} s', flush=True)
  return result


def _fit(points):
  """Slope (GiB per sample) and intercept through the two largest n."""
  (n0, m0), (n1, m1) = sorted(points)[-2:]
  slope = (m1 - m0) / (n1 - n0)
  return slope, m1 - slope * n1


def _machine() -> str:
  mem = ''
  try:
    with open('/proc/meminfo') as f:
      kib = int(f.readline().split()[1])
    mem = f', {kib / 2**20:.0f} GiB'
  except (OSError, ValueError, IndexError):
    pass
  import jax
  return (f'{platform.machine()} {os.cpu_count()}-core CPU{mem}, '
          f'jax {jax.__version__}, Python {platform.python_version()}, '
          f'load average {os.getloadavg()[0]:.1f} at the start, '
          f'{datetime.date.today().isoformat()}')


def main(argv):
  del argv
  if _CHILD.value:
    if _CHILD.value == 'loc':
      out = _child_loc(_N.value, _CHILD_CHUNK.value, _CHILD_DEVICES.value)
    elif _CHILD.value == 'fem':
      out = _child_fem(_N.value, _CHILD_DEVICES.value)
    else:
      out = _child_dataset(_N.value)
    print('RESULT ' + json.dumps(out))
    return

  print('command: python -m experiments.perf.scaling ' +
        ' '.join(sys.argv[1:]))
  print('machine:', _machine(), flush=True)
  sizes = [int(s) for s in _SIZES.value]
  devices = [int(d) for d in _DEVICES.value]
  loc = {(n, c): _run_child('loc', n, c) for n in sizes
         for c in (0, _CHUNK.value)}
  dev = {d: _run_child('loc', _DEVICE_SIZE.value, 0, d) for d in devices}
  data = _run_child('dataset', _FEM_CELLS.value)
  fem = {d: _run_child('fem', _FEM_CELLS.value, 0, d) for d in devices}

  print(f'\n1. Localization, {_STEPS.value} Adam steps, INN x 2 / width 4 / '
        f'4 GLOW blocks / 3 x {_HIDDEN.value} ReLU, 1 device\n')
  print('| samples | chunk | wall s | sample-steps/s | peak RSS GiB | '
        'RSS growth GiB | compile s |')
  print('|---|---|---|---|---|---|---|')
  for (n, c), r in loc.items():
    print(f'| {n:,} | {c or "none"} | {r["wall_s"]:.2f} | '
          f'{r["sample_steps_per_s"]:,.0f} | {r["peak_gib"]:.2f} | '
          f'{r["peak_gib"] - r["base_gib"]:.2f} | {r["compile_s"]:.1f} |')

  print(f'\n2. Localization of {_DEVICE_SIZE.value:,} samples, rows split '
        'over fake CPU devices\n')
  print('| devices | wall s | sample-steps/s | speed-up |')
  print('|---|---|---|---|')
  for d, r in dev.items():
    print(f'| {d} | {r["wall_s"]:.2f} | {r["sample_steps_per_s"]:,.0f} | '
          f'{dev[devices[0]]["wall_s"] / r["wall_s"]:.2f}x |')

  print(f'\n3. FEM, {_FEM_CELLS.value} cells of 32 x 32\n')
  print('| what | devices | wall s | cells/s | compile s |')
  print('|---|---|---|---|---|')
  print(f'| make_dataset (generate + FEM, batch {_FEM_BATCH}) | 1 | '
        f'{data["wall_s"]:.2f} | {data["cells_per_s"]:.1f} | '
        f'{data["compile_s"]:.1f} |')
  for d, r in fem.items():
    print(f'| FEM via map_rows ({_FEM_BATCH} per device) | {d} | '
          f'{r["wall_s"]:.2f} | {r["cells_per_s"]:.1f} | '
          f'{r["compile_s"]:.1f} |')

  if len(sizes) >= 2:
    budget = _MEMORY_GIB.value
    print(f'\n4. Largest localization in {budget:g} GiB (linear fit of '
          'peak RSS through the two largest sizes)\n')
    chunked = f'chunks of {_CHUNK.value:,}'
    for c, name in ((0, 'one call'), (_CHUNK.value, chunked)):
      slope, icpt = _fit([(n, loc[(n, c)]['peak_gib']) for n in sizes])
      per = slope * 2**30
      largest = (budget - icpt) / slope if slope > 0 else float('inf')
      print(f'- {name}: {per:,.0f} bytes per sample, fixed {icpt:.2f} GiB '
            f'-> about {largest:,.3g} samples')


if __name__ == '__main__':
  app.run(main)
