"""Localization speed: batched JAX Adam vs the PyTorch loop, same network.

The surrogate is the robot-arm INN's forward y-block (x_dim 4, y_dim 2,
z_dim 2, 6 GLOW blocks with fixed permutations, subnets of 3 Dense layers of
width 256, LeakyReLU). Its parameters are random (a nonzero last layer, so
the map is not a permutation); speed does not depend on their values. The
same parameters are copied into a plain PyTorch module, outputs are checked
to agree, and both localize the same starts towards y* = (1.5, 0):

  JAX:     ipage_jax.localization.make_localizer (one compiled lax.scan).
  PyTorch: x leaf with requires_grad, torch.optim.Adam([x], lr); per step
           zero_grad, loss = ((f(x)[:, :2] - y*)**2).sum() (+ boundary),
           backward, step -- the loop of the reference implementation.

Reported: samples*steps/s for both (best wall time of --repeats runs,
warm-up excluded; process CPU time alongside, since the machine may be
shared), JAX trace + compile time separately, the speed ratio and the final
mean surrogate loss of both. Run:

  python -m experiments.perf.localization --num_samples=1000 --steps=1000
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from ipage_jax import flows
from ipage_jax import localization

_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1000, 'Rows localized.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Adam steps.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per framework.')
_LR = flags.DEFINE_float('learning_rate', 5e-3, 'Adam step size.')
_BOUNDARY = flags.DEFINE_bool(
    'boundary', False, 'Add the boundary penalty (box = prior +- 3 std).')
_UNROLL = flags.DEFINE_integer('unroll', 1, 'lax.scan unroll factor (JAX).')
_INIT_SCALE = flags.DEFINE_float(
    'final_init_scale', 0.05, 'Std of the subnets\' last layer at init.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time PyTorch if installed.')
_TORCH_THREADS = flags.DEFINE_list(
    'torch_threads', ['0'], 'torch.set_num_threads values to time, e.g. '
    '"2,1"; 0 = os.cpu_count().')

# Robot arm: prior std of (start height, three angles), default target.
_PRIOR_STD = np.array([0.25, 0.5, 0.5, 0.5], np.float32)
_TARGET = np.array([1.5, 0.0], np.float32)


def _make_inn():
  return flows.INN(x_dim=4, y_dim=2, z_dim=2, num_blocks=6, hidden=256,
                   depth=3, activation='leaky_relu', coupling='glow',
                   clamp=2.0, final_init_scale=_INIT_SCALE.value)


def _jax_forward(inn):
  def apply_fn(params, x):
    out, _ = inn.apply(params, inn.pad_x(x))
    return inn.split_output(out)[0]
  return apply_fn


def _jax_runner(inn, params, x0, bounds):
  """Builds the JAX localizer and compiles it ahead of time.

  Returns:
    (run, compile_s): `run()` does one full localization and blocks on the
    result; compile_s is the trace + compile time in seconds.
  """
  localizer = localization.make_localizer(
      _jax_forward(inn), steps=_STEPS.value, learning_rate=_LR.value,
      bounds=bounds, boundary_weight=1.0, unroll=_UNROLL.value)
  target = jnp.asarray(_TARGET)
  start = time.perf_counter()
  localizer.lower(params, x0, target).compile()
  compile_s = time.perf_counter() - start
  run = lambda: jax.block_until_ready(localizer(params, x0, target))
  return run, compile_s


def _torch_runner(torch, model, x0, bounds):
  """Returns a function `steps -> x`: the reference PyTorch loop."""
  target = torch.from_numpy(_TARGET)
  y_dim = _TARGET.shape[0]
  if bounds is not None:
    lower, upper = (torch.from_numpy(np.asarray(b)) for b in bounds)
    centre, half = (lower + upper) / 2, (upper - lower) / 2

  def run(steps):
    x = torch.from_numpy(np.array(x0)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=_LR.value)
    for _ in range(steps):
      opt.zero_grad()
      loss = ((model(x)[:, :y_dim] - target) ** 2).sum()
      if bounds is not None:
        loss = loss + torch.relu((x - centre).abs() - half).sum()
      loss.backward()
      opt.step()
    return x.detach()

  return run


def _timed(fn):
  """Runs fn(); returns ((wall s, process CPU s), fn's result)."""
  wall, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return (time.perf_counter() - wall, time.process_time() - cpu), out


def _report(name, times, work, extra):
  """One result line: best wall time of `times` [(wall, cpu)], throughput."""
  wall, cpu = min(times)
  runs = ', '.join(f'{t:.2f}' for t, _ in times)
  print(f'{name:<18} best {wall:8.2f} s wall ({cpu:8.2f} s CPU)  '
        f'{work / wall:9.0f} samples*steps/s  [runs: {runs}]  {extra}')
  return wall, cpu


def main(argv):
  del argv
  logging.info('JAX devices: %s', jax.devices())
  n, steps = _NUM_SAMPLES.value, _STEPS.value
  key_init, key_x = jax.random.split(jax.random.key(_SEED.value))
  inn = _make_inn()
  params = inn.init(key_init, jnp.zeros((1, inn.width)))
  x0 = jax.random.normal(key_x, (n, 4)) * jnp.asarray(_PRIOR_STD)[None, :]
  bounds = None
  if _BOUNDARY.value:
    bounds = (-3 * _PRIOR_STD, 3 * _PRIOR_STD)

  work = n * steps
  print(f'setting: {n} samples x {steps} Adam steps, lr {_LR.value}, '
        f'boundary {_BOUNDARY.value}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}')
  jax_run, compile_s = _jax_runner(inn, params, x0, bounds)
  _timed(jax_run)  # warm-up (the jit cache is filled on the first call)

  torch = None
  if _TORCH.value:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      print('PyTorch is not installed: timing JAX only.')
  threads = [int(t) or os.cpu_count() for t in _TORCH_THREADS.value]
  if torch is not None:
    # The same network in plain PyTorch, weights copied from `params`.
    from experiments.perf import torch_reference  # pylint: disable=g-import-not-at-top
    model = torch_reference.build_inn(inn, params, impl='plain')
    model.requires_grad_(False)  # only x is optimized, as in localization
    with torch.no_grad():
      y_torch = model(torch.from_numpy(np.array(x0)))[:, :2].numpy()
    y_jax = np.asarray(_jax_forward(inn)(params, x0))
    err = float(np.max(np.abs(y_torch - y_jax)))
    scale = max(1.0, float(np.max(np.abs(y_jax))))
    if not err <= 1e-5 * scale:
      raise SystemExit(f'JAX and PyTorch networks disagree: max |diff| {err}')
    print(f'forward outputs agree: max |JAX - PyTorch| = {err:.2e} '
          f'(max |y| {scale:.2f})')
    torch_run = _torch_runner(torch, model, x0, bounds)
    for t in threads:
      torch.set_num_threads(t)
      torch_run(min(20, steps))  # warm-up: thread pool, allocator
  else:
    threads = []

  # Alternate the frameworks so that load from other jobs hits both alike.
  jax_times, torch_times = [], {t: [] for t in threads}
  torch_x = {}
  for _ in range(_REPEATS.value):
    elapsed, res = _timed(jax_run)
    jax_times.append(elapsed)
    for t in threads:
      torch.set_num_threads(t)
      elapsed, torch_x[t] = _timed(lambda: torch_run(steps))
      torch_times[t].append(elapsed)
  jax_wall, jax_cpu = _report(
      'JAX', jax_times, work,
      f'trace + compile {compile_s:.2f} s (excluded); final mean loss '
      f'{float(jnp.mean(res.loss)):.6g}')
  if not threads:
    return
  for t in threads:
    with torch.no_grad():
      torch_loss = ((model(torch_x[t])[:, :2] - torch.from_numpy(_TARGET))
                    ** 2).sum(1).mean().item()
    wall, cpu = _report(
        f'PyTorch {t} thread' + ('s' if t > 1 else ''), torch_times[t], work,
        f'final mean loss {torch_loss:.6g}')
    print(f'  speed ratio JAX / PyTorch ({t} threads): {wall / jax_wall:.2f}x'
          f' wall, {cpu / jax_cpu:.2f}x CPU time')
  print(f'torch {torch.__version__}')


if __name__ == '__main__':
  app.run(main)
