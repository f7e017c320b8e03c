r"""INN throughput: forward and inverse samples/s of the robot-arm network.

The robot-arm network of the paper's Table 5: width 4 (x_dim 4, y_dim 2,
z_dim 2), 6 GLOW coupling blocks with fixed permutations, subnets of 3 Dense
layers of width 256, LeakyReLU. Its parameters are random with a nonzero
last subnet layer (--final_init_scale), so the network is not a bare
permutation; speed does not depend on their values.

For every batch size, three jitted functions of (params, v (batch, 4)) are
compiled (compile time reported apart) and timed: `forward` (rows and
log-determinants), `inverse`, and `forward+inverse` (one function running
the forward pass and then the inverse of its output). Each timed run makes
--calls back-to-back calls and waits for the last; samples/s = batch *
calls / wall seconds, best of --repeats. The round-trip error
max |f^-1(f(v)) - v| is printed as a check. Run:

  python -m experiments.perf.flows
  python -m experiments.perf.flows --batch_sizes=512,8192,65536 --calls=200
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp

from ipage_jax import flows

_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', ['512', '8192'], 'Rows per call.')
_CALLS = flags.DEFINE_integer('calls', 100, 'Calls per timed run.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per function.')
_INIT_SCALE = flags.DEFINE_float(
    'final_init_scale', 0.05, 'Std of the subnets\' last layer at init.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')


def robot_arm_inn(final_init_scale: float) -> flows.INN:
  """The robot-arm INN of the paper's Table 5."""
  return flows.INN(x_dim=4, y_dim=2, z_dim=2, num_blocks=6, hidden=256,
                   depth=3, activation='leaky_relu', coupling='glow',
                   clamp=2.0, final_init_scale=final_init_scale)


def make_functions(inn: flows.INN) -> dict:
  """The jitted functions timed: name -> fn(params, v)."""

  def forward(params, v):
    return inn.apply(params, v)

  def inverse(params, v):
    return inn.apply(params, v, method='inverse')

  def round_trip(params, v):
    out, log_det = forward(params, v)
    back, log_det_inv = inverse(params, out)
    return out, log_det, back, log_det_inv

  return {'forward': jax.jit(forward), 'inverse': jax.jit(inverse),
          'forward+inverse': jax.jit(round_trip)}


def time_function(fn, params, v, calls: int, repeats: int
                  ) -> tuple[float, list[float]]:
  """Compiles fn for (params, v) and times it.

  Returns:
    (compile seconds, wall seconds of each timed run of `calls` calls).
  """
  start = time.perf_counter()
  compiled = fn.lower(params, v).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(params, v))  # warm-up
  walls = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = None
    for _ in range(calls):
      out = compiled(params, v)
    jax.block_until_ready(out)
    walls.append(time.perf_counter() - start)
  return compile_s, walls


def main(argv):
  del argv
  sys.stdout.reconfigure(line_buffering=True)  # lines show when piped
  logging.info('JAX devices: %s', jax.devices())
  try:
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  except ValueError:
    logging.error('--batch_sizes must be integers, got %s',
                  _BATCH_SIZES.value)
    sys.exit(2)
  if min(batch_sizes) < 1 or _CALLS.value < 1 or _REPEATS.value < 1:
    logging.error('batch sizes, --calls and --repeats must be >= 1')
    sys.exit(2)
  inn = robot_arm_inn(_INIT_SCALE.value)
  key_init, key_v = jax.random.split(jax.random.key(_SEED.value))
  params = inn.init(key_init, jnp.zeros((1, inn.width), jnp.float32))
  print(f'{datetime.date.today()}, {platform.machine()} {os.cpu_count()} '
        f'CPUs, jax {jax.__version__} ({jax.default_backend()})')
  print(f'robot-arm INN: width {inn.width}, {inn.num_blocks} GLOW blocks, '
        f'subnets {inn.depth} x {inn.hidden} {inn.activation}, '
        f'{flows.num_params(params)} parameters; {_CALLS.value} calls per '
        f'run, best of {_REPEATS.value}')
  functions = make_functions(inn)
  rows = []
  for batch in batch_sizes:
    v = jax.random.normal(jax.random.fold_in(key_v, batch),
                          (batch, inn.width), jnp.float32)
    print(f'batch {batch}:')
    for name, fn in functions.items():
      compile_s, walls = time_function(fn, params, v, _CALLS.value,
                                       _REPEATS.value)
      speed = batch * _CALLS.value / min(walls)
      runs = ', '.join(f'{w:.3f}' for w in walls)
      print(f'  {name:<16} {speed:12.0f} samples/s  '
            f'{1e3 * min(walls) / _CALLS.value:8.3f} ms/call  '
            f'(compile {compile_s:.2f} s)  [runs: {runs} s]')
      rows.append((batch, name, speed, compile_s))
    # After the timing, so that its compile times are not cache hits.
    _, _, back, _ = functions['forward+inverse'](params, v)
    err = float(jnp.max(jnp.abs(back - v)))
    print(f'  round trip: max |f^-1(f(v)) - v| = {err:.1e}')
  print('\n| batch | function | samples/s | compile s |')
  print('|---|---|---|---|')
  for batch, name, speed, compile_s in rows:
    print(f'| {batch} | {name} | {speed:.0f} | {compile_s:.2f} |')


if __name__ == '__main__':
  app.run(main)
