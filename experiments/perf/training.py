r"""Training speed: jitted JAX train step vs a PyTorch reference, same work.

One optimizer step = forward pass f(x) + inverse pass f^-1([y, z]) + the
three losses of the bi-directional objective (L_y fit, L_z latent MMD, L_x
backward MMD; multi-scale IMQ kernels) + gradient + Adam update, for the
sinewave and robot-arm networks of the paper's Table 5 (GLOW couplings):

  sinewave:  x 2, y 1, width 8 (z 7), 4 blocks, subnets 3 x 128 ReLU,
             batch 1024
  robot_arm: x 4, y 2, width 4 (z 2), 6 blocks, subnets 3 x 256 LeakyReLU,
             batch 512

Both frameworks get the same network (the torch one is built from the JAX
initial parameters, see `torch_reference`), the same losses with fixed
weights lam_x = lam_y = lam_z = 1, the same standardized task data (90 %
train, 10 % validation), the same batch, the same epoch structure (a shuffle
per epoch, the last incomplete batch dropped, a validation fit at the end)
and Adam with the same constant learning rate (--learning_rate):

  JAX:     `ipage_jax.training.make_epoch` (one compiled lax.scan per epoch),
           optax.adam; timed after compilation, which is reported apart.
  PyTorch: data as in-memory tensors; per step index the batch, zero_grad,
           loss, backward, torch.optim.Adam.step; no host sync until the end
           of a run; torch.set_num_threads(each of --torch_threads).

Before timing, the losses (each term) and gradients of both are compared on
one batch with the same noise draws, at the initial parameters and at a
perturbed copy; they must agree to --tolerance / --grad_tolerance
(relative), else the script stops. Reported: steps/s (best of --repeats;
frameworks alternate so that outside load hits both alike), CPU time per
wall second, JAX compile time, the final losses, and the ratio to each
PyTorch setting and to the fastest one. PyTorch is timed with every thread
count of --torch_threads: on a CPU shared with other jobs its OpenMP
threads can wait on each other at every operation, and one thread is then
much faster than all cores. Run:

  python -m experiments.perf.training
  python -m experiments.perf.training --configs=robot_arm --steps=500 \
      --repeats=5 --torch_impl=freia,plain
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import sys
import time
from typing import Any, Callable, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.configs import default as default_config
from ipage_jax import data as data_lib
from ipage_jax import losses
from ipage_jax import pipeline
from ipage_jax import schedules
from ipage_jax import tasks
from ipage_jax import training

try:  # the optional extra [torch]
  # pylint: disable=g-import-not-at-top
  import torch
  from experiments.perf import torch_reference
  # pylint: enable=g-import-not-at-top
except ImportError:
  torch = torch_reference = None

_CONFIGS = flags.DEFINE_list(
    'configs', ['sinewave', 'robot_arm'], 'Configurations to time.')
_STEPS = flags.DEFINE_integer(
    'steps', 1000, 'Optimizer steps per timed run (rounded up to whole '
    'epochs).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per framework.')
_DATA_SIZE = flags.DEFINE_integer(
    'data_size', 10_000, 'Rows of task data (the paper\'s data size).')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time PyTorch if installed.')
_TORCH_IMPL = flags.DEFINE_list(
    'torch_impl', ['auto'], 'Torch INNs to time: freia, plain, auto (FrEIA '
    'when it imports, else plain).')
_TORCH_ADAM = flags.DEFINE_enum(
    'torch_adam', 'fused', ['default', 'foreach', 'fused'],
    'torch.optim.Adam kernel: default (per-tensor loop on CPU), foreach or '
    'fused.')
_TORCH_THREADS = flags.DEFINE_list(
    'torch_threads', ['0', '1'], 'torch.set_num_threads values to time; '
    '0 = os.cpu_count().')
_CHECK = flags.DEFINE_bool(
    'check', True, 'Compare losses and gradients of JAX and PyTorch before '
    'timing; stop when they disagree.')
_TOLERANCE = flags.DEFINE_float(
    'tolerance', 1e-4, 'Largest relative loss difference in the check.')
_GRAD_TOLERANCE = flags.DEFINE_float(
    'grad_tolerance', 1e-3, 'Largest relative gradient difference (L2).')
_LR = flags.DEFINE_float(
    'learning_rate', 1e-3, 'Constant Adam step size of both frameworks '
    '(the robot-arm rate 1e-2 diverges without the decay and clipping of '
    'the pipeline; speed does not depend on it).')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')

_WEIGHTS = (1.0, 1.0, 1.0)  # (lam_x, lam_y, lam_z) in both frameworks


def _robot_arm_config() -> ml_collections.ConfigDict:
  """The paper's Table 5, robot-arm column (used when no config file exists)."""
  c = default_config.get_config()
  c.model.width = 4
  c.model.num_blocks = 6
  c.model.hidden = 256
  c.model.depth = 3
  c.model.activation = 'leaky_relu'
  c.train.batch_size = 512
  c.train.learning_rate = 1e-2
  c.train.final_learning_rate = 1e-4
  return c


def get_config(name: str) -> ml_collections.ConfigDict:
  """`experiments/configs/<name>.py`, or the built-in robot-arm settings."""
  try:
    return importlib.import_module(f'experiments.configs.{name}').get_config()
  except ModuleNotFoundError:
    if name == 'robot_arm':
      return _robot_arm_config()
    raise ValueError(f'no configuration {name!r}') from None


class Setup(NamedTuple):
  """One configuration ready to time.

  Attributes:
    name: configuration name.
    config: its ConfigDict.
    inn: the network.
    params: initial parameters (shared by both frameworks).
    data: (x, y, x_val, y_val) standardized float32 numpy arrays.
    batch_size / num_batches / epochs: the epoch structure of a timed run.
    learning_rate: constant Adam step size.
  """
  name: str
  config: ml_collections.ConfigDict
  inn: Any
  params: Any
  data: tuple[np.ndarray, ...]
  batch_size: int
  num_batches: int
  epochs: int
  learning_rate: float


def make_setup(name: str, key: jax.Array, data_size: int, steps: int,
               learning_rate: float) -> Setup:
  """Data, network and initial parameters of configuration `name`."""
  config = get_config(name)
  task = tasks.get(name)
  key_data, key_split, key_init = jax.random.split(key, 3)
  x, y = task.make_dataset(key_data, data_size)
  train_idx, val_idx = data_lib.train_val_split(
      key_split, x.shape[0], config.train.val_fraction)
  x_scaler = data_lib.Standardizer.fit(x[train_idx])
  y_scaler = data_lib.Standardizer.fit(y[train_idx])
  xs = np.array(x_scaler.forward(jnp.asarray(x)), np.float32)
  ys = np.array(y_scaler.forward(jnp.asarray(y)), np.float32)
  data = (xs[train_idx], ys[train_idx], xs[val_idx], ys[val_idx])
  inn = pipeline.build_inn(config, task.x_dim, task.y_dim)
  params = inn.init(key_init, jnp.zeros((1, inn.width), jnp.float32))
  batch_size = config.train.batch_size
  num_batches = len(train_idx) // batch_size
  if num_batches == 0:
    raise ValueError(f'{len(train_idx)} training rows are too few for a '
                     f'batch of {batch_size}')
  epochs = max(1, -(-steps // num_batches))
  return Setup(name, config, inn, params, data, batch_size, num_batches,
               epochs, learning_rate)


def jax_loss(setup: Setup):
  """The JAX objective with the fixed weights `_WEIGHTS`."""
  lam = tuple(jnp.float32(w) for w in _WEIGHTS)
  t = setup.config.train
  return losses.make_inn_objective(
      setup.inn, lambda step: schedules.LossWeights(*lam),
      widths=tuple(t.mmd_widths), y_noise=t.y_noise, pad_noise=t.pad_noise)


def torch_loss(setup: Setup):
  """The PyTorch twin of `jax_loss`."""
  t = setup.config.train
  return torch_reference.make_inn_objective(
      setup.inn, widths=tuple(t.mmd_widths), weights=_WEIGHTS,
      y_noise=t.y_noise, pad_noise=t.pad_noise)


def jax_noise(inn, key: jax.Array, n: int) -> tuple[np.ndarray, ...]:
  """The standard-normal draws `losses.make_inn_objective` makes from `key`.

  Mirrors its key use (split into pad, y, z, back keys; unscaled normals of
  shapes (n, width), (n, y_dim), (n, z_dim), (n, width)), so the torch loss
  can be fed the same noise.
  """
  k_pad, k_y, k_z, k_back = jax.random.split(key, 4)
  shapes = ((n, inn.width), (n, inn.y_dim), (n, inn.z_dim), (n, inn.width))
  return tuple(np.array(jax.random.normal(k, s, jnp.float32))
               for k, s in zip((k_pad, k_y, k_z, k_back), shapes))


def _perturbed(params, key: jax.Array, scale: float):
  """params + scale * N(0, 1) on every leaf (a non-identity network)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      p + scale * jax.random.normal(k, p.shape, p.dtype)
      for p, k in zip(leaves, keys)])


def check_agreement(setup: Setup, impl: str, key: jax.Array
                    ) -> tuple[float, float]:
  """Compares losses and gradients of both frameworks on one batch.

  At the initial parameters (identity couplings) and at a perturbed copy
  (`_perturbed`, scale 0.02), with the same batch and noise draws.

  Returns:
    (largest relative difference of the loss and its three terms, largest
    relative L2 norm of the gradient difference).
  """
  inn = setup.inn
  grad_fn = jax.jit(jax.value_and_grad(jax_loss(setup), has_aux=True))
  t_loss_fn = torch_loss(setup)
  key_batch, key_noise, key_params = jax.random.split(key, 3)
  rows = np.asarray(jax.random.permutation(
      key_batch, setup.data[0].shape[0]))[:setup.batch_size]
  xb, yb = setup.data[0][rows], setup.data[1][rows]
  noise = torch_reference.Noise(*(
      torch.from_numpy(a) for a in jax_noise(inn, key_noise, len(rows))))
  worst_loss = worst_grad = 0.0
  for point, params in (('init', setup.params),
                        ('perturbed', _perturbed(setup.params, key_params,
                                                 0.02))):
    (loss, aux), grads = grad_fn(params, xb, yb, key_noise, jnp.int32(0))
    model = torch_reference.build_inn(inn, params, impl)
    t_loss, t_aux = t_loss_fn(model, torch.from_numpy(xb),
                              torch.from_numpy(yb), noise)
    t_loss.backward()
    terms = [('loss', loss, t_loss)] + [
        (n, aux[n], t_aux[n]) for n in ('l_x', 'l_y', 'l_z')]
    for name, a, b in terms:
      a, b = float(a), float(b.item())
      rel = abs(a - b) / max(abs(a), 1e-6)
      logging.info('check %s %s %s: JAX %.7g torch %.7g (rel %.1e)',
                   setup.name, point, name, a, b, rel)
      worst_loss = max(worst_loss, rel)
    # The JAX gradient tree, loaded into a torch INN, lines up parameter by
    # parameter with the torch model.
    reference = torch_reference.build_inn(inn, grads, impl)
    diff = norm = 0.0
    with torch.no_grad():
      for p, g in zip(model.parameters(), reference.parameters()):
        diff += float((p.grad - g).square().sum())
        norm += float(g.square().sum())
    rel = (diff / max(norm, 1e-30)) ** 0.5
    logging.info('check %s %s gradient: |JAX| %.4g, relative |diff| %.1e',
                 setup.name, point, norm ** 0.5, rel)
    worst_grad = max(worst_grad, rel)
  return worst_loss, worst_grad


class Timing(NamedTuple):
  """Best-of-repeats timing of one framework.

  Attributes:
    walls: wall seconds of every timed run.
    cpus: process CPU seconds of every timed run.
    steps: optimizer steps per run.
    final_loss: training loss at the end of the last run (JAX: the mean
      over its last epoch; PyTorch: its last step).
  """
  walls: list[float]
  cpus: list[float]
  steps: int
  final_loss: float

  @property
  def steps_per_s(self) -> float:
    return self.steps / min(self.walls)

  @property
  def cpu_ms_per_step(self) -> float:
    return 1e3 * self.cpus[int(np.argmin(self.walls))] / self.steps

  @property
  def cores_used(self) -> float:
    i = int(np.argmin(self.walls))
    return self.cpus[i] / self.walls[i]


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
  wall, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return time.perf_counter() - wall, time.process_time() - cpu, out


def jax_runner(setup: Setup, key: jax.Array):
  """Compiles the JAX epoch; returns (compile s, run) with run() -> loss.

  Each run() trains `setup.epochs` epochs further from the current state and
  waits for the result only at the end.
  """
  opt = optax.adam(setup.learning_rate)
  epoch_fn = training.make_epoch(
      jax_loss(setup), losses.make_forward_fit(setup.inn), opt,
      setup.batch_size, setup.num_batches)
  arrays = tuple(jnp.asarray(a) for a in setup.data)
  state = training.init_state(setup.params, opt)
  start = time.perf_counter()
  compiled = epoch_fn.lower(state, key, *arrays).compile()
  compile_s = time.perf_counter() - start
  holder = {'state': state, 'epoch': 0}

  def run():
    keys = [jax.random.fold_in(key, holder['epoch'] + e)
            for e in range(setup.epochs)]
    jax.block_until_ready(keys)
    state, metrics = holder['state'], None
    for k in keys:
      state, metrics = compiled(state, k, *arrays)
    jax.block_until_ready(state)
    holder['state'], holder['epoch'] = state, holder['epoch'] + setup.epochs
    return float(metrics['loss'])

  return compile_s, run


def torch_runner(setup: Setup, impl: str, adam: str):
  """Returns run() -> loss: `setup.epochs` PyTorch epochs, one sync at end.

  Each run() trains the same model further.
  """
  model = torch_reference.build_inn(setup.inn, setup.params, impl)
  loss_fn = torch_loss(setup)
  params = [p for p in model.parameters() if p.requires_grad]
  kwargs = {} if adam == 'default' else {adam: True}
  opt = torch.optim.Adam(params, lr=setup.learning_rate, **kwargs)
  x, y, x_val, y_val = (torch.from_numpy(a) for a in setup.data)
  inn, bs = setup.inn, setup.batch_size
  x_val = torch.nn.functional.pad(x_val, (0, inn.width - inn.x_dim))

  def run():
    loss = val = None
    for _ in range(setup.epochs):
      perm = torch.randperm(x.shape[0])
      for b in range(setup.num_batches):
        rows = perm[b * bs:(b + 1) * bs]
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model, x[rows], y[rows])
        loss.backward()
        opt.step()
      with torch.no_grad():  # the validation fit, as the JAX epoch does
        val = (model(x_val)[:, :inn.y_dim] - y_val).square().mean()
    del val
    return loss.item()

  return run


def _describe(setup: Setup) -> str:
  inn = setup.inn
  return (f'{setup.name}: x {inn.x_dim}, y {inn.y_dim}, z {inn.z_dim}, '
          f'width {inn.width}, {inn.num_blocks} GLOW blocks, subnets '
          f'{inn.depth} x {inn.hidden} {inn.activation}, batch '
          f'{setup.batch_size}, {setup.num_batches} steps/epoch x '
          f'{setup.epochs} epochs = {setup.num_batches * setup.epochs} steps '
          f'per run, Adam lr {setup.learning_rate:g}')


def _line(label: str, timing: Timing, extra: str = '') -> str:
  runs = ', '.join(f'{w:.2f}' for w in timing.walls)
  return (f'  {label:<16} {timing.steps_per_s:9.1f} steps/s  best '
          f'{min(timing.walls):7.2f} s ({timing.cores_used:.2f} cores busy, '
          f'{timing.cpu_ms_per_step:.0f} CPU ms/step)  [runs: {runs}]  '
          f'final loss {timing.final_loss:.5g}{extra}')


def benchmark(name: str, key: jax.Array, impls: list[str],
              threads: list[int]) -> list[tuple[str, str, float, float]]:
  """Times one configuration.

  Returns:
    Rows (config, framework setting, steps/s, JAX speed ratio), JAX first.
  """
  key_setup, key_check, key_train = jax.random.split(key, 3)
  setup = make_setup(name, key_setup, _DATA_SIZE.value, _STEPS.value,
                     _LR.value)
  print(_describe(setup))
  if _CHECK.value:
    for impl in impls:
      loss_rel, grad_rel = check_agreement(setup, impl, key_check)
      ok = loss_rel <= _TOLERANCE.value and grad_rel <= _GRAD_TOLERANCE.value
      print(f'  check {impl}: relative |JAX - torch| of the losses '
            f'{loss_rel:.1e} (tolerance {_TOLERANCE.value:g}), of the '
            f'gradients {grad_rel:.1e} (tolerance {_GRAD_TOLERANCE.value:g})'
            f': {"ok" if ok else "FAILED"}')
      if not ok:
        raise SystemExit(f'JAX and PyTorch ({impl}) disagree on {name}')
  compile_s, jax_run = jax_runner(setup, key_train)
  jax_first, _, _ = _timed(jax_run)  # warm-up: first dispatches
  runners = {'JAX': jax_run}
  for impl in impls:
    run = torch_runner(setup, impl, _TORCH_ADAM.value)
    for t in threads:
      label = f'PyTorch {impl} {t}t'

      def with_threads(run=run, t=t):
        torch.set_num_threads(t)
        return run()

      with_threads()  # warm-up: thread pool, allocator, optimizer state
      runners[label] = with_threads
  steps = setup.num_batches * setup.epochs
  walls = {k: [] for k in runners}
  cpus = {k: [] for k in runners}
  final = {}
  for _ in range(_REPEATS.value):
    for k, run in runners.items():
      wall, cpu, final[k] = _timed(run)
      walls[k].append(wall)
      cpus[k].append(cpu)
  timings = {k: Timing(walls[k], cpus[k], steps, final[k]) for k in runners}
  for k, t in timings.items():
    if not abs(t.final_loss) < 1e3:
      logging.warning('%s: %s training diverged (final loss %g); its speed '
                      'may not be representative', name, k, t.final_loss)
  jax_speed = timings['JAX'].steps_per_s
  print(_line('JAX', timings['JAX'],
              f'  (compile {compile_s:.2f} s, warm-up run {jax_first:.2f} s)'))
  rows = [(name, 'JAX', jax_speed, 1.0)]
  for k in list(runners)[1:]:
    ratio = jax_speed / timings[k].steps_per_s
    print(_line(k, timings[k], f'  JAX / this {ratio:.2f}x'))
    rows.append((name, k, timings[k].steps_per_s, ratio))
  if len(rows) > 1:
    best = min(rows[1:], key=lambda r: r[3])
    print(f'  speed ratio JAX / fastest PyTorch ({best[1]}): {best[3]:.2f}x')
  return rows


def main(argv):
  del argv
  sys.stdout.reconfigure(line_buffering=True)  # lines show when piped
  logging.info('JAX devices: %s', jax.devices())
  impls, threads = [], []
  if _TORCH.value and torch is None:
    print('PyTorch is not installed (pip install .[torch]): JAX only.')
  if _TORCH.value and torch is not None:
    try:
      impls = list(dict.fromkeys(
          torch_reference.resolve_impl(i) for i in _TORCH_IMPL.value))
      threads = list(dict.fromkeys(
          int(t) or os.cpu_count() for t in _TORCH_THREADS.value))
    except ValueError as e:
      logging.error('%s', e)
      sys.exit(2)
  header = (f'{datetime.date.today()}, {platform.machine()} {os.cpu_count()} '
            f'CPUs, jax {jax.__version__} ({jax.default_backend()})')
  if impls:
    header += (f', torch {torch.__version__} (threads '
               f'{",".join(map(str, threads))}, Adam {_TORCH_ADAM.value})')
  print(header)
  key = jax.random.key(_SEED.value)
  rows = []
  for i, name in enumerate(_CONFIGS.value):
    try:
      rows += benchmark(name, jax.random.fold_in(key, i), impls, threads)
    except ValueError as e:
      logging.error('%s', e)
      sys.exit(2)
  print('\n| config | framework | steps/s | JAX / this |')
  print('|---|---|---|---|')
  for name, label, speed, ratio in rows:
    print(f'| {name} | {label} | {speed:.1f} | {ratio:.2f}x |')
  print('command: python -m experiments.perf.training ' +
        ' '.join(sys.argv[1:]))


if __name__ == '__main__':
  app.run(main)
