"""Registry of inverse methods sharing one fit / solve shape and one model.

  method = methods.get('na')
  model = method.fit(key, x, y, config, checkpoint_dir=..., progress=...,
                     augment=...)
  sols = method.solve(model, key, y_target, num_solutions, sampler,
                      solve_config=config.solve)
  save_model(path, model); model = load_model(path)

so the command-line runner and the benchmark harness treat them alike. A
method's `solver(model)` gives the pieces of phases 2 and 3
(`solving.Solver`), for callers that run the phases one by one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections

from ipage_jax import baselines
from ipage_jax import model as model_lib
from ipage_jax import pipeline
from ipage_jax import solving
from ipage_jax.baselines import common

Config = ml_collections.ConfigDict


class Method(NamedTuple):
  """An inverse method.

  Attributes:
    name: registry name.
    description: one line for listings.
    fit: `(key, x, y, config, *, checkpoint_dir, progress, augment) ->
      Model`.
    solver: `Model -> solving.Solver` (draw, forward model, ranking aids).
    solve_section: task config -> this method's `solve` section (the
      task's, with the method's own overrides).
    build: `(config, x_dim, y_dim) -> network` of a fitted model.
    template: `(config, x_dim, y_dim) -> parameter shapes` (for loading).
    draws_posterior: its candidates before localization (`x_posterior`)
      are samples of a learned posterior p(x | y*) (NA: random starts).
  """
  name: str
  description: str
  fit: Callable[..., model_lib.Model]
  solver: Callable[[model_lib.Model], solving.Solver]
  solve_section: Callable[[Config], Config]
  build: Callable[[Config, int, int], Any]
  template: Callable[[Config, int, int], Any]
  draws_posterior: bool

  def solve_settings(self, config: Config,
                     solve_config: Optional[Config] = None,
                     sampler: Optional[str] = None) -> solving.SolveSettings:
    """The checked solve settings of this method for a task config.

    Args:
      config: the task config (e.g. `model.config`).
      solve_config: replaces `config.solve` (the method's own overrides
        still apply on top).
      sampler: replaces the sampler (None: the settings').
    """
    if solve_config is not None:
      config = Config(config.to_dict())
      config.solve = solve_config
    return solving.solve_settings(self.solve_section(config), sampler=sampler)

  def solve(self, model: model_lib.Model, key: jax.Array, y_target,
            num_solutions: int = 1000, sampler: Optional[str] = None, *,
            solve_config: Optional[Config] = None,
            simulate: Optional[Callable] = None,
            repair: Optional[Callable] = None,
            feasible: Optional[Callable] = None) -> solving.Solutions:
    """Designs for (M,) or (T, M) targets (see `solving.solve`; `simulate`
    is the task's simulator for `solve.forward='simulator'`, `repair` and
    `feasible` its `Task.repair` and `Task.feasible` for `solve.repair`)."""
    settings = self.solve_settings(model.config, solve_config, sampler)
    return solving.solve(model, self.solver(model), key, y_target,
                         num_solutions, settings, simulate=simulate,
                         repair=repair, feasible=feasible)


def _ipage(name: str, localize: bool, description: str) -> Method:
  return Method(
      name=name, description=description, fit=pipeline.fit,
      solver=functools.partial(pipeline.solver, localize=localize),
      solve_section=lambda config: config.solve,
      build=pipeline.build_inn, template=pipeline.params_template,
      draws_posterior=True)


def _from_spec(spec: common.Spec) -> Method:
  return Method(
      name=spec.name, description=spec.description,
      fit=functools.partial(common.fit, spec),
      solver=functools.partial(common.solver, spec),
      solve_section=functools.partial(common.solve_section, spec),
      build=lambda config, x_dim, y_dim: common.build(
          spec, config, x_dim, y_dim)[0],
      template=functools.partial(common.template, spec),
      draws_posterior=spec.surrogate is None)


_METHODS = {
    'ipage': _ipage(
        'ipage', True,
        'INN posterior + space-filling latent sampling + localization'),
    'inn': _ipage('inn', False, 'the same INN sampled without localization'),
    **{spec.name: _from_spec(spec) for spec in baselines.SPECS},
}
NAMES = tuple(_METHODS)


def get(name: str) -> Method:
  """Returns the method called `name` (one of `NAMES`)."""
  if name in _METHODS:
    return _METHODS[name]
  raise ValueError(f'unknown method {name!r}; expected one of {NAMES}')


save_model = model_lib.save_model


def load_model(path: str, method: Optional[str] = None) -> model_lib.Model:
  """Reads a model of any method written by `save_model`.

  Args:
    path: its checkpoint directory (or a `.msgpack` file of an earlier
      version).
    method: if given, the model must be usable by this method (trained by
      its `fit`; 'inn' reads iPage's models).

  Raises:
    ValueError: for a missing, corrupted or inconsistent checkpoint, or a
      model of another method.
  """
  model = model_lib.read_model(
      path, template=lambda m, c, xd, yd: get(m).template(c, xd, yd),
      config_defaults=pipeline.with_defaults,
      build=lambda m, c, xd, yd: get(m).build(c, xd, yd))
  if method is not None and get(model.method).fit is not get(method).fit:
    raise ValueError(f'{path!r} holds a {model.method!r} model, not one '
                     f'that {method!r} can use')
  return model
