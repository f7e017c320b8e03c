"""Task registry: `get(name)` returns a `Task` (see `base.Task`)."""

import importlib

from ipage_jax.tasks.base import Task

# Task modules are imported on first use so that importing the package does not
# pay for every simulator (the FEM module in particular).
_MODULES = {
    'sinewave': 'ipage_jax.tasks.sinewave',
    'robot_arm': 'ipage_jax.tasks.robot_arm',
    'ballistics': 'ipage_jax.tasks.ballistics',
    'mos2': 'ipage_jax.tasks.mos2',
    'architected': 'ipage_jax.tasks.architected',
}

NAMES = tuple(_MODULES)


def get(name: str) -> Task:
  """Returns the task called `name` (one of `NAMES`)."""
  if name not in _MODULES:
    raise ValueError(f'unknown task {name!r}; expected one of {NAMES}')
  return importlib.import_module(_MODULES[name]).task()


__all__ = ['NAMES', 'Task', 'get']
