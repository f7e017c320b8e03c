"""What every baseline shares: its settings, fit and solver.

A baseline is a `Spec`: how to build its network, its loss, its validation
loss and how to draw candidate designs for standardized targets.
`ipage_jax.methods` turns a Spec into a `methods.Method` whose `fit` trains
with the shared loop (`training.fit_model`) and whose solver plugs into the
shared draw -> localize -> keep-best loop (`solving.solve`); its models are
`model.Model` records like iPage's. So the runner's `--method` flag and the
benchmark harness treat iPage and every baseline alike.

Settings: `config.train` and `config.solve` of the task (the same epochs,
batch size and learning-rate schedule as iPage), plus a per-method section
`config.<name>` (defaults: the Spec's `default_config(config)`); its optional
`train` / `solve` sub-sections override those of the task for this method
only. A `hidden` width of 0 means "match iPage's parameter count": the
width is chosen so that the network has as many parameters as the task's
iPage INN (`param_budget`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections

from ipage_jax import data as data_lib
from ipage_jax import flows
from ipage_jax import model as model_lib
from ipage_jax import pipeline
from ipage_jax import solving
from ipage_jax import training

Array = jax.Array
Config = ml_collections.ConfigDict


class Spec(NamedTuple):
  """The method-specific parts of a baseline.

  Attributes:
    name: registry name.
    description: one line for listings.
    default_config: task config -> the method's section (must hold
      `hidden`); may copy settings such as the activation from the task's
      iPage model.
    build: (method_cfg, x_dim, y_dim, hidden) -> network (hashable).
    init: (net, key) -> parameters.
    make_loss: (net, method_cfg) -> `loss_fn(params, x, y, key, step)` on
      standardized data, returning (loss, aux dict).
    val: (net, method_cfg) -> `val_fn(params, x, y) -> scalar`.
    draw: (model, key, y_std (T, M), n, settings) -> (T, n, D) standardized
      candidate designs.
    surrogate: optional module-level `apply(net, params, x_std) -> y_std`
      of a forward model; given, `solve` localizes and ranks through it,
      and the drawn candidates are starts, not posterior samples.
  """
  name: str
  description: str
  default_config: Callable[[Config], Config]
  build: Callable[[Config, int, int, int], Any]
  init: Callable[[Any, Array], Any]
  make_loss: Callable[[Any, Config], training.LossFn]
  val: Callable[[Any, Config], training.ValFn]
  draw: Callable[..., Array]
  surrogate: Optional[Callable[[Any, Any, Array], Array]] = None


def method_config(spec: Spec, config: Config) -> Config:
  """The method's section: Spec defaults updated by `config.<name>`."""
  cfg = spec.default_config(config)
  if spec.name in config:
    _update(cfg, config[spec.name], spec.name)
  return cfg


def _update(base: Config, overrides: Config, path: str) -> None:
  for key, value in overrides.items():
    if key in ('train', 'solve'):  # free-form overrides, checked later
      base[key] = value
    elif key not in base:
      raise ValueError(f'unknown setting {path}.{key}; expected one of '
                       f'{sorted(base.keys())}')
    elif isinstance(value, Config):
      _update(base[key], value, f'{path}.{key}')
    else:
      base[key] = value


def section(config: Config, cfg: Config, name: str) -> Config:
  """`config.<name>` ('train' or 'solve') with the method's overrides."""
  merged = Config(config[name].to_dict())
  for key, value in cfg.get(name, {}).items():
    if key not in merged:
      raise ValueError(f'unknown {name} setting {key!r} in the method '
                       f'section; expected one of {sorted(merged.keys())}')
    merged[key] = value
  return merged


def param_budget(config: Config, x_dim: int, y_dim: int) -> int:
  """Parameter count of the task's iPage INN (the budget to match)."""
  return flows.num_params(pipeline.params_template(config, x_dim, y_dim))


def count_params(spec: Spec, cfg: Config, x_dim: int, y_dim: int,
                 hidden: int) -> int:
  """Parameters of the Spec's network at subnet width `hidden`."""
  net = spec.build(cfg, x_dim, y_dim, hidden)
  return flows.num_params(jax.eval_shape(
      functools.partial(spec.init, net), jax.random.PRNGKey(0)))


def matched_hidden(spec: Spec, cfg: Config, x_dim: int, y_dim: int,
                   budget: int) -> int:
  """The width whose parameter count is closest to `budget`.

  Counts grow with the width, so a bisection over [2, 8192] finds the two
  neighbouring widths around the budget; the closer one wins.
  """
  lo, hi = 2, 8192
  count = lambda h: count_params(spec, cfg, x_dim, y_dim, h)
  if count(hi) <= budget:
    return hi
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if count(mid) <= budget:
      lo = mid
    else:
      hi = mid
  return lo if budget - count(lo) <= count(hi) - budget else hi


def build(spec: Spec, config: Config, x_dim: int, y_dim: int):
  """(network, method section) for a task config and data shapes."""
  cfg = method_config(spec, config)
  hidden = cfg.hidden or matched_hidden(
      spec, cfg, x_dim, y_dim, param_budget(config, x_dim, y_dim))
  return spec.build(cfg, x_dim, y_dim, hidden), cfg


def fit(spec: Spec, key: Array, x, y, config: Optional[Config] = None, *,
        checkpoint_dir: Optional[str] = None,
        progress: Optional[training.Progress] = None,
        augment: Optional[training.Augment] = None) -> model_lib.Model:
  """Trains the baseline on (x (n, D), y (n, M)) in original units.

  `augment`: as in `pipeline.fit` (a random symmetry of the designs applied
  to every training minibatch; None: off).
  """
  config = pipeline.default_config() if config is None else config
  x, y = data_lib.check_pairs(x, y)
  net, cfg = build(spec, config, x.shape[1], y.shape[1])
  train_cfg = section(config, cfg, 'train')
  return training.fit_model(
      key, x, y, config, method=spec.name, net=net, train_cfg=train_cfg,
      init_fn=functools.partial(spec.init, net),
      make_loss=lambda total_steps: spec.make_loss(net, cfg),
      val_fn=spec.val(net, cfg),
      fingerprint={'method': spec.name, 'net': cfg.to_dict(),
                   'train': train_cfg.to_dict(), 'x': x.shape,
                   'y': y.shape},
      checkpoint_dir=checkpoint_dir, progress=progress, augment=augment)


def solve_section(spec: Spec, config: Config) -> Config:
  """The task's `solve` section with the method's overrides."""
  return section(config, method_config(spec, config), 'solve')


def solver(spec: Spec, model: model_lib.Model) -> solving.Solver:
  """Phases 2 and 3 of the baseline: its draws; with a surrogate (NA) every
  candidate is localized through it and the best kept by its error."""
  forward = None
  if spec.surrogate is not None:
    forward = solving.Forward(spec.surrogate, model.net, model.best_params)
  return solving.Solver(draw=functools.partial(spec.draw, model),
                        forward=forward, localize=forward is not None)


def template(spec: Spec, config: Config, x_dim: int, y_dim: int) -> Any:
  """The shapes of the baseline's parameters (for loading a model)."""
  net, _ = build(spec, config, x_dim, y_dim)
  return jax.eval_shape(functools.partial(spec.init, net),
                        jax.random.PRNGKey(0))


def noisy(x: Array, key: Array, std: float) -> Array:
  """x plus N(0, std^2) noise (std 0: x unchanged); standardized units."""
  if std == 0:
    return x
  return x + std * jax.random.normal(key, x.shape, x.dtype)
