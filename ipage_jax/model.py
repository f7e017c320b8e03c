"""The fitted model of every method, and its file.

  model = ipage_jax.fit(key, x, y, config)          # or methods.get(m).fit
  ipage_jax.save_model('runs/a/model', model)
  model = ipage_jax.load_model('runs/a/model')

One record for iPage and every baseline: the network, its final and its
best-validation parameters, the standardization fitted on the training
split, the data boxes, the settings and the training history. Arrays that
go in or come out of a method are in the data's own units; `x_scaler` and
`y_scaler` map them to the standardized units the networks work in.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import flows

PyTree = Any
# (method, config, x_dim, y_dim) -> a pytree with the shapes of the method's
# parameters (e.g. `jax.eval_shape` of its init).
Template = Callable[[str, ml_collections.ConfigDict, int, int], PyTree]


class Model(NamedTuple):
  """A fitted model of any method.

  Attributes:
    method: the method whose `fit` made it ('ipage' for the INN that the
      methods 'ipage' and 'inn' share).
    net: the network (a hashable Flax module).
    params: final parameters (iPage samples f^-1([y*, z]) with these).
    best_params: the lowest-validation-loss parameters (iPage's surrogate
      f_y; the baselines draw and localize with these).
    x_scaler / y_scaler: standardization fitted on the training split.
    x_range: (lower (D,), upper (D,)) box of the training designs.
    y_range: (lower (M,), upper (M,)) range of the training properties.
    config: the settings it was fitted with.
    history: per-epoch training metrics, name -> (epochs,).
    diverged: training stopped early on a non-finite loss.
  """
  method: str
  net: Any
  params: PyTree
  best_params: PyTree
  x_scaler: data_lib.Standardizer
  y_scaler: data_lib.Standardizer
  x_range: tuple[np.ndarray, np.ndarray]
  y_range: tuple[np.ndarray, np.ndarray]
  config: ml_collections.ConfigDict
  history: dict
  diverged: bool = False

  @property
  def num_params(self) -> int:
    """Trainable scalars of the network."""
    return flows.num_params(self.best_params)

  @property
  def x_dim(self) -> int:
    return int(self.x_range[0].shape[0])

  @property
  def y_dim(self) -> int:
    return int(self.y_range[0].shape[0])


def save_model(path: str, model: Model) -> None:
  """Writes `model` to the checkpoint directory `path` (atomically)."""
  tree = {'params': {'final': model.params, 'best': model.best_params},
          'x_scaler': model.x_scaler._asdict(),
          'y_scaler': model.y_scaler._asdict(),
          'x_range': list(model.x_range), 'y_range': list(model.y_range)}
  meta = {'method': model.method, 'config': model.config.to_dict(),
          'x_dim': model.x_dim, 'y_dim': model.y_dim,
          'diverged': bool(model.diverged),
          'history': {k: np.asarray(v).tolist()
                      for k, v in model.history.items()}}
  checkpoint.save(path, tree, meta)


def read_model(path: str, template: Template,
               config_defaults: Callable[[dict], ml_collections.ConfigDict],
               build: Callable[[str, ml_collections.ConfigDict, int, int],
                               Any]) -> Model:
  """Reads a model written by `save_model` (or an earlier `.msgpack` file).

  Args:
    path: the checkpoint directory, or a model file of an earlier version.
    template: parameter shapes of a method (see `Template`).
    config_defaults: saved config dict -> ConfigDict with the fields that
      were added since it was written set to their defaults.
    build: (method, config, x_dim, y_dim) -> the method's network.

  Raises:
    ValueError: for a missing, corrupted or inconsistent checkpoint.
  """
  meta = checkpoint.read_meta(path)
  try:
    method = meta.get('method', 'ipage')
    config = config_defaults(meta['config'])
    x_dim, y_dim = int(meta['x_dim']), int(meta['y_dim'])
    history = {k: np.asarray(v) for k, v in meta['history'].items()}
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path!r} is not a saved model: {e}') from e
  params = template(method, config, x_dim, y_dim)
  # iPage files of the msgpack era call the best parameters 'surrogate'.
  best = ('surrogate' if os.path.isfile(path) and method == 'ipage'
          else 'best')
  zeros = lambda k: np.zeros((k,), np.float32)
  tree = {'params': {'final': params, best: params},
          'x_scaler': {'mean': zeros(x_dim), 'scale': zeros(x_dim)},
          'y_scaler': {'mean': zeros(y_dim), 'scale': zeros(y_dim)},
          'x_range': [zeros(x_dim), zeros(x_dim)],
          'y_range': [zeros(y_dim), zeros(y_dim)]}
  tree = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), tree)
  tree, _ = checkpoint.restore(path, tree)
  as_jnp = lambda t: jax.tree_util.tree_map(jnp.asarray, t)
  return Model(
      method=method, net=build(method, config, x_dim, y_dim),
      params=as_jnp(tree['params']['final']),
      best_params=as_jnp(tree['params'][best]),
      x_scaler=data_lib.Standardizer(**as_jnp(tree['x_scaler'])),
      y_scaler=data_lib.Standardizer(**as_jnp(tree['y_scaler'])),
      x_range=tuple(np.asarray(a) for a in tree['x_range']),
      y_range=tuple(np.asarray(a) for a in tree['y_range']),
      config=config, history=history,
      diverged=bool(meta.get('diverged', False)))


__all__ = ('Model', 'read_model', 'save_model')
