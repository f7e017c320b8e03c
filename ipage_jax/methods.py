"""Registry of inverse methods sharing one fit / solve shape.

Every method is a `Method` record of pure-ish functions:

  model = method.fit(key, x, y, config, checkpoint_dir=..., progress=...)
  sols = method.solve(model, key, y_target, num_solutions, sampler,
                      solve_config=config.solve)
  method.save(path, model); model = method.load(path)

so the command-line runner and the benchmark harness treat them alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from ipage_jax import pipeline


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
}
# Methods of the paper's comparison that are not in this release yet.
PLANNED = ('cinn', 'cvae', 'mdn', 'na')
NAMES = tuple(_METHODS)


def get(name: str) -> Method:
  """Returns the method called `name` (one of `NAMES`)."""
  if name in _METHODS:
    return _METHODS[name]
  if name in PLANNED:
    raise ValueError(f'method {name!r} is not available yet; available: '
                     f'{", ".join(NAMES)}')
  raise ValueError(f'unknown method {name!r}; expected one of {NAMES}')
