r"""Architected materials: 32 x 32 cells with a target effective modulus.

  python -m experiments.architected --workdir runs/architected
  python -m experiments.architected --workdir runs/architected \
      --config.data_cache=data/architected_20000.npz --target 0.1

The 20,000-cell FEM data set takes minutes to simulate, so it is cached:
`--config.data_cache` names the .npz file, by default
`architected_<rows>.npz` next to the workdir (shared by the runs there). A
missing file is simulated and written; an existing one is read (see
`ipage_jax.tasks.architected.make_dataset`; `experiments.make_architected_data`
writes the same files). The cache ignores `--seed`: every seed trains on the
same cells.

Besides the shared runner's outputs (see `--help` for the flags and the
config fields behind them) it draws generated cells with their FEM
modulus next to the training cells closest to the target
(`architected_cells.png`) and the training curves (`training_curves.png`).
"""

import dataclasses
import os

from absl import app
from absl import logging
import jax.numpy as jnp
import numpy as np

from experiments import runner
from experiments import train
from experiments.robot_arm import first_target
from ipage_jax import plotting
from ipage_jax.tasks import architected

NAME = 'architected'
FIGURE = 'architected_cells.png'
NUM_SHOWN = 8


def data_cache_path(config, default_dir: str) -> str:
  """The data cache: `config.data_cache`, else in `default_dir`."""
  if config.get('data_cache'):
    return config.data_cache
  rows = config.data_size or architected.DATA_SIZE
  return os.path.join(default_dir, f'{NAME}_{rows}.npz')


def with_data_cache(task, path: str):
  """`task` whose `make_dataset` reads / writes the FEM cache `path`."""

  def make_dataset(key, n=None):
    if os.path.exists(path):
      logging.info('Reading the data set from %s', path)
    else:
      logging.info('Simulating the data set (cached in %s)', path)
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return architected.make_dataset(key, n, cache_path=path,
                                    progress=train.count_logger('FEM',
                                                                'cells'))

  return dataclasses.replace(task, make_dataset=make_dataset)


def _cache_of(run) -> str:
  parent = os.path.dirname(os.path.abspath(run.workdir))
  return data_cache_path(run.config, parent)


def as_cells(x) -> np.ndarray:
  """(k, 1024) densities -> (k, 32, 32) images in [0, 1]."""
  x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
  return x.reshape(-1, architected.SIZE, architected.SIZE)


def report(run, model, sols, key) -> dict:
  """Generated cells with their FEM y beside training cells + curves."""
  del key  # deterministic figures
  x, _, target = first_target(sols)
  shown = np.asarray(x[:NUM_SHOWN])
  y_fem = np.asarray(architected.simulate(shown))[:, 0]
  captions = [f'FEM {v:.3f}' for v in y_fem]
  forward = run.method.solver(model).forward
  if forward is not None:  # the learned forward model (iPage, INN, NA)
    y_sur = np.asarray(model.y_scaler.inverse(forward.apply(
        forward.net, forward.params,
        model.x_scaler.forward(jnp.asarray(shown)))))[:, 0]
    captions = [f'{c}\nf_y {s:.3f}' for c, s in zip(captions, y_sur)]
  rows = [(f'generated\n(y* = {target[0]:g})', as_cells(shown), captions),
          nearest_data_row(_cache_of(run), run.config.data_size or None,
                           target)]
  fig = plotting.cell_grid(rows, title=f'{run.method.name}: cells for '
                           f'E / E0 = {target[0]:g}')
  fig.savefig(os.path.join(run.workdir, FIGURE), dpi=110)
  x_data, _ = architected.load_dataset(_cache_of(run),
                                       run.config.data_size or None)
  return {'figure': FIGURE, 'figure_fem_y': y_fem,
          'design': architected.design_stats(x),
          'data_design': architected.design_stats(x_data)}


def nearest_data_row(path: str, rows, target) -> tuple:
  """A `plotting.cell_grid` row: the NUM_SHOWN cells of the data set at
  `path` (its first `rows`; None: all) whose FEM modulus is nearest the
  (1,) target."""
  x_data, y_data = architected.load_dataset(path, rows)
  near = np.argsort(np.abs(y_data[:, 0] - target[0]))[:NUM_SHOWN]
  return ('data cells\nnearest y*', as_cells(x_data[near]),
          [f'FEM {v:.3f}' for v in y_data[near, 0]])


def _with_cache(run: train.Run) -> train.Run:
  return dataclasses.replace(run, task=with_data_cache(run.task,
                                                       _cache_of(run)))


HOOKS = train.Hooks(prepare=_with_cache, report=report)

if __name__ == '__main__':
  app.run(runner.make_main(NAME, HOOKS))
