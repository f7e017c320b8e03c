"""Registry of inverse methods sharing one fit / solve shape.

Every method is a `Method` record of pure-ish functions:

  model = method.fit(key, x, y, config, checkpoint_dir=..., progress=...,
                     augment=...)
  sols = method.solve(model, key, y_target, num_solutions, sampler,
                      solve_config=config.solve)
  method.save(path, model); model = method.load(path)

so the command-line runner and the benchmark harness treat them alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from ipage_jax import baselines
from ipage_jax import pipeline
from ipage_jax.baselines import common


class Method(NamedTuple):
  """An inverse method (see the module docstring for the call shapes)."""
  name: str
  fit: Callable[..., Any]
  solve: Callable[..., pipeline.Solutions]
  save: Callable[[str, Any], None]
  load: Callable[[str], Any]
  description: str


def _ipage_solve(model, key, y_target, num_solutions, sampler=None, *,
                 solve_config=None, localize=True):
  return pipeline.solve(model, key, y_target, num_solutions, sampler,
                        localize=localize, solve_config=solve_config)


def _from_spec(spec: common.Spec) -> Method:
  return Method(spec.name, functools.partial(common.fit, spec),
                functools.partial(common.solve, spec),
                functools.partial(common.save, spec),
                functools.partial(common.load, spec), spec.description)


_METHODS = {
    'ipage': Method(
        'ipage', pipeline.fit, _ipage_solve, pipeline.save_model,
        pipeline.load_model,
        'INN posterior + space-filling latent sampling + localization'),
    'inn': Method(
        'inn', pipeline.fit,
        functools.partial(_ipage_solve, localize=False),
        pipeline.save_model, pipeline.load_model,
        'the same INN sampled without localization'),
    **{spec.name: _from_spec(spec) for spec in baselines.SPECS},
}
NAMES = tuple(_METHODS)


def get(name: str) -> Method:
  """Returns the method called `name` (one of `NAMES`)."""
  if name in _METHODS:
    return _METHODS[name]
  raise ValueError(f'unknown method {name!r}; expected one of {NAMES}')
