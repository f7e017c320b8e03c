"""Checkpoints: pytrees plus JSON metadata in one msgpack file, written
atomically (temporary file + rename), so a crash never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

import jax
import numpy as np
from flax import serialization

PyTree = Any
TRAINING_FILE = 'training_state.msgpack'


def _to_json(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def save_pytree(path: str, tree: PyTree, meta: Optional[dict] = None) -> None:
  """Writes `tree` (arrays are copied to host) and `meta` to `path`."""
  payload = {'tree': serialization.to_state_dict(tree),
             'meta': _to_json(meta or {})}
  data = serialization.msgpack_serialize(
      serialization.to_state_dict(_to_numpy(payload)))
  write_atomic(path, data)


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same directory and a
  rename: readers see the old file or the complete new one, never a part."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  if isinstance(tree, (str, bytes, int, float)) or tree is None:
    return tree
  return np.asarray(tree)


def read_pytree(path: str) -> tuple[dict, dict]:
  """Reads a file written by `save_pytree`: (raw state dict, meta).

  Raises:
    ValueError: when the file is not a readable checkpoint.
  """
  try:
    with open(path, 'rb') as f:
      payload = serialization.msgpack_restore(f.read())
    return payload['tree'], json.loads(payload['meta'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'cannot read checkpoint {path!r}: {e}') from e
  except Exception as e:  # msgpack raises its own exception types
    raise ValueError(f'corrupted checkpoint {path!r}: {e}') from e


def load_pytree(path: str, template: PyTree) -> tuple[PyTree, dict]:
  """Restores a pytree shaped like `template` from `path`; returns (tree, meta).

  Raises:
    ValueError: when the file is unreadable or its tree does not match the
      template's structure or array shapes.
  """
  raw, meta = read_pytree(path)
  try:
    tree = serialization.from_state_dict(template, raw)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f'checkpoint {path!r} does not match the expected structure: {e}'
    ) from e
  for got, want in zip(jax.tree_util.tree_leaves(tree),
                       jax.tree_util.tree_leaves(template)):
    if np.shape(got) != np.shape(want):
      raise ValueError(f'checkpoint {path!r} has an array of shape '
                       f'{np.shape(got)} where {np.shape(want)} is expected')
  return tree, meta


def save_training(directory: str, state: PyTree, epoch: int,
                  history: dict, fingerprint: Any) -> None:
  """Saves a training state after `epoch` epochs (see `restore_training`)."""
  meta = {'epoch': epoch, 'history': history,
          'fingerprint': _to_json(fingerprint)}
  save_pytree(os.path.join(directory, TRAINING_FILE), state, meta)


def restore_training(directory: str, template: PyTree, fingerprint: Any
                     ) -> Optional[tuple[PyTree, int, dict]]:
  """Restores (state, epochs_done, history), or None without a checkpoint.

  Raises:
    ValueError: for a corrupted checkpoint or one written by a run with a
      different fingerprint (configuration or data shapes).
  """
  path = os.path.join(directory, TRAINING_FILE)
  if not os.path.exists(path):
    return None
  state, meta = load_pytree(path, template)
  if meta.get('fingerprint') != _to_json(fingerprint):
    raise ValueError(
        f'checkpoint {path!r} was written by a different run configuration; '
        'use another directory or delete it')
  history = {k: list(v) for k, v in meta['history'].items()}
  return state, int(meta['epoch']), history
