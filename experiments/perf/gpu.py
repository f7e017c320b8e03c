r"""Accelerator figures: training, localization, FEM, time to 1,000 solutions.

Prints the device (name, kind, count) and, measured on it:

1. Training steps/s: one optimizer step of the bi-directional INN objective
   (L_y + L_z + L_x, all weights 1; Adam) for the sinewave and robot-arm
   networks of `experiments/configs`, batch of the config, in the compiled
   epoch loop of `training.make_epoch` (compile time apart). With
   --num_devices != 1 the batch is split over that many devices.
2. Localization sample-steps/s: --loc_samples samples x --loc_steps Adam
   steps through the robot-arm INN (random weights), rows split over
   --num_devices devices in chunks of --loc_chunk rows (0: one call).
3. FEM cells/s: --fem_cells 32 x 32 architected cells homogenized in
   compiled batches of --fem_batch per device (`parallel.map_rows`).
4. Time to 1,000 solutions per task: each task of --tasks is trained for
   --train_epochs epochs on --data_rows rows with its config (only so that
   there is a model), then its solve of 1,000 solutions for the default
   target is timed twice: first call (with compilation) and a second call
   with another key (compiled).

Nothing here is specific to a GPU; `--quick` runs tiny sizes on any machine
(a smoke test, a few minutes on a 2-core CPU). On a GPU machine:

  pip install -e ".[cuda12]"
  python -m experiments.perf.gpu
  python -m experiments.perf.gpu --num_devices=0   # every local GPU
"""

from __future__ import annotations

import datetime
import importlib
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import train
from ipage_jax import flows
from ipage_jax import localization
from ipage_jax import losses
from ipage_jax import methods
from ipage_jax import parallel
from ipage_jax import pipeline
from ipage_jax import schedules
from ipage_jax import tasks
from ipage_jax import training
from ipage_jax.tasks import architected
from ipage_jax.tasks import homogenization

_QUICK = flags.DEFINE_bool('quick', False, 'Tiny sizes (smoke test).')
_NUM_DEVICES = flags.DEFINE_integer(
    'num_devices', 1, 'Devices to use: 1, 0 = all, or n.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 200,
                                    'Timed optimizer steps per config.')
_LOC_SAMPLES = flags.DEFINE_integer('loc_samples', 100_000,
                                    'Samples localized.')
_LOC_STEPS = flags.DEFINE_integer('loc_steps', 200, 'Adam steps.')
_LOC_CHUNK = flags.DEFINE_integer('loc_chunk', 0, 'Rows per call (0: all).')
_FEM_CELLS = flags.DEFINE_integer('fem_cells', 8192, 'Cells homogenized.')
_FEM_BATCH = flags.DEFINE_integer('fem_batch', 1024,
                                  'Cells per compiled call per device.')
_TASKS = flags.DEFINE_list(
    'tasks', ['sinewave', 'robot_arm', 'ballistics', 'mos2', 'architected'],
    'Tasks of the time-to-1,000-solutions table.')
_TRAIN_EPOCHS = flags.DEFINE_integer('train_epochs', 5,
                                     'Epochs of the models solved in 4.')
_DATA_ROWS = flags.DEFINE_integer('data_rows', 8192,
                                  'Training rows per task in 4.')
_NUM_SOLUTIONS = flags.DEFINE_integer('num_solutions', 1000,
                                      'Solutions per task in 4.')


def _sizes() -> dict:
  """The run's sizes (--quick shrinks them)."""
  if _QUICK.value:
    return dict(train_steps=5, loc_samples=2000, loc_steps=20, fem_cells=32,
                fem_batch=16, train_epochs=1, data_rows=256,
                num_solutions=100)
  return dict(train_steps=_TRAIN_STEPS.value, loc_samples=_LOC_SAMPLES.value,
              loc_steps=_LOC_STEPS.value, fem_cells=_FEM_CELLS.value,
              fem_batch=_FEM_BATCH.value, train_epochs=_TRAIN_EPOCHS.value,
              data_rows=_DATA_ROWS.value,
              num_solutions=_NUM_SOLUTIONS.value)


def _config(task: str):
  return importlib.import_module(f'experiments.configs.{task}').get_config()


def _mesh():
  return parallel.make_mesh(_NUM_DEVICES.value) if (
      _NUM_DEVICES.value != 1 and jax.device_count() > 1) else None


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def training_steps(task: str, steps: int) -> dict:
  """Steps/s of the bi-directional objective for `task`'s network."""
  config = _config(task)
  spec = tasks.get(task)
  inn = pipeline.build_inn(config, spec.x_dim, spec.y_dim)
  batch = config.train.batch_size
  mesh = _mesh()
  if mesh is not None and batch % mesh.size:
    batch = (batch // mesh.size + 1) * mesh.size
  ones = schedules.LossWeights(jnp.ones(()), jnp.ones(()), jnp.ones(()))
  loss_fn = losses.make_inn_objective(
      inn, lambda step: ones, widths=tuple(config.train.mmd_widths),
      pad_noise=config.train.pad_noise)
  val_fn = losses.make_forward_fit(inn)
  optimizer = optax.adam(1e-3)
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (batch * steps, spec.x_dim))
  y = jax.random.normal(jax.random.fold_in(key, 1), (batch * steps,
                                                     spec.y_dim))
  params = inn.init(key, jnp.zeros((1, inn.width), jnp.float32))
  state = training.init_state(params, optimizer)
  args = (x, y, x[:batch], y[:batch])
  if mesh is not None:
    state, args = parallel.replicate((state, args), mesh)
  epoch = training.make_epoch(loss_fn, val_fn, optimizer, batch, steps, mesh)
  start = time.perf_counter()
  compiled = epoch.lower(state, key, *args).compile()
  compile_s = time.perf_counter() - start
  _timed(compiled, state, key, *args)  # warm-up
  (_, metrics), wall = _timed(compiled, state, jax.random.fold_in(key, 2),
                              *args)
  return dict(task=task, batch=batch, steps_per_s=steps / wall,
              compile_s=compile_s, loss=float(metrics['loss']))


def localization_rate(samples: int, steps: int) -> dict:
  """Sample-steps/s through the robot-arm INN."""
  inn = flows.INN(x_dim=4, y_dim=2, z_dim=2, num_blocks=6, hidden=256,
                  depth=3, activation='leaky_relu', coupling='glow',
                  clamp=2.0, final_init_scale=0.05)
  params = inn.init(jax.random.PRNGKey(0), jnp.zeros((1, inn.width)))

  def forward(p, x):
    return inn.split_output(inn.apply(p, inn.pad_x(x))[0])[0]

  localizer = localization.make_localizer(forward, steps=steps,
                                          learning_rate=5e-3)
  x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (samples, 4)))
  target = np.array([1.5, 0.0], np.float32)
  mesh, chunk = _mesh(), _LOC_CHUNK.value
  run = lambda: parallel.localize_sharded(localizer, params, x0, target,
                                          mesh, chunk).x
  _, first = _timed(run)
  _, wall = _timed(run)
  return dict(samples=samples, steps=steps, first_s=first, wall_s=wall,
              sample_steps_per_s=samples * steps / wall)


def fem_rate(cells: int, batch: int) -> dict:
  """Cells/s of the FEM homogenization."""
  rho = np.asarray(architected.generate_cells(jax.random.PRNGKey(0), cells))
  fn = jax.jit(lambda _, c: homogenization.effective_modulus(c))
  mesh = _mesh()
  per_call = batch * (1 if mesh is None else mesh.size)
  run = lambda n: parallel.map_rows(fn, None, rho[:n], mesh=mesh,
                                    chunk_size=per_call)
  _, compile_s = _timed(run, min(per_call, cells))
  y, wall = _timed(run, cells)
  return dict(cells=cells, batch=per_call, cells_per_s=cells / wall,
              compile_s=compile_s, finite=bool(np.isfinite(y).all()))


def time_to_solutions(task: str, sizes: dict) -> dict:
  """Seconds of iPage's solve for N solutions of the task's target."""
  spec = tasks.get(task)
  config = _config(task)
  config.train.epochs = sizes['train_epochs']
  rows = min(sizes['data_rows'], spec.data_size)
  config.train.batch_size = min(config.train.batch_size, rows // 4)
  if _QUICK.value:
    config.solve.localize_steps = min(config.solve.localize_steps, 50)
  config.parallel.num_devices = _NUM_DEVICES.value
  config.parallel.localize_chunk = _LOC_CHUNK.value
  mesh = _mesh()
  if mesh is not None:
    config.train.batch_size -= config.train.batch_size % mesh.size
  x, y = spec.make_dataset(jax.random.PRNGKey(0), rows)
  start = time.perf_counter()
  model = pipeline.fit(jax.random.PRNGKey(1), x, y, config)
  fit_s = time.perf_counter() - start
  n = sizes['num_solutions']
  target = spec.default_target
  run = train.Run(spec, methods.get('ipage'), config, '')
  times = []
  for k in (2, 3):
    start = time.perf_counter()
    _, phases = train.timed_solve(run, model, jax.random.PRNGKey(k), target,
                                  n, label=task)
    times.append((time.perf_counter() - start, phases))
  (cold, _), (warm, phases) = times
  return dict(task=task, rows=rows, fit_s=fit_s, solutions=n,
              steps=config.solve.localize_steps, first_s=cold, warm_s=warm,
              inference_s=phases.inference_s,
              localization_s=phases.localization_s)


def main(argv):
  del argv
  sizes = _sizes()
  devices = jax.devices()
  print(f'device: {devices[0].device_kind} ({devices[0].platform}), '
        f'{len(devices)} device(s), {jax.process_count()} process(es); '
        f'using num_devices={_NUM_DEVICES.value}')
  print(f'jax {jax.__version__}, Python {platform.python_version()}, '
        f'{datetime.date.today().isoformat()}', flush=True)

  print('\n| training (bi-directional objective) | batch | steps/s | '
        'compile s |')
  print('|---|---|---|---|')
  for task in ('sinewave', 'robot_arm'):
    r = training_steps(task, sizes['train_steps'])
    print(f'| {task} | {r["batch"]} | {r["steps_per_s"]:.1f} | '
          f'{r["compile_s"]:.1f} |', flush=True)

  r = localization_rate(sizes['loc_samples'], sizes['loc_steps'])
  print('\n| localization (robot-arm INN) | samples | steps | '
        'sample-steps/s | first call s |')
  print('|---|---|---|---|---|')
  print(f'| chunk {_LOC_CHUNK.value or "none"} | {r["samples"]:,} | '
        f'{r["steps"]} | {r["sample_steps_per_s"]:,.0f} | '
        f'{r["first_s"]:.1f} |', flush=True)

  r = fem_rate(sizes['fem_cells'], sizes['fem_batch'])
  print('\n| FEM (32 x 32 cells) | cells | batch | cells/s | compile s |')
  print('|---|---|---|---|---|')
  print(f'| homogenization | {r["cells"]:,} | {r["batch"]} | '
        f'{r["cells_per_s"]:,.1f} | {r["compile_s"]:.1f} |', flush=True)

  print(f'\n| task | training rows / epochs | fit s | localization steps | '
        f'{sizes["num_solutions"]:,} solutions, first call s | again s | '
        'of which localization s |')
  print('|---|---|---|---|---|---|---|')
  for task in _TASKS.value:
    r = time_to_solutions(task, sizes)
    print(f'| {task} | {r["rows"]:,} / {sizes["train_epochs"]} | '
          f'{r["fit_s"]:.1f} | {r["steps"]} | {r["first_s"]:.2f} | '
          f'{r["warm_s"]:.2f} | {r["localization_s"]:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
