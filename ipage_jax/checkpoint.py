"""Checkpoints with orbax: a pytree plus JSON metadata per directory.

  checkpoint.save('runs/a/model', tree, meta)      # one directory, atomic
  tree, meta = checkpoint.restore('runs/a/model', template)

Orbax writes to a temporary directory and renames it when complete, so a
crash never leaves a checkpoint that reads as whole. Training states go
through a `CheckpointManager` that keeps the last few epochs
(`save_training` / `restore_training`).

Files of earlier versions (one flax-msgpack file per model) are still read
by `restore` and `read_meta`; the msgpack helpers below also hold the MoS2
oracle cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

PyTree = Any
LEGACY_TRAINING_FILE = 'training_state.msgpack'
KEEP_TRAINING = 2  # training checkpoints kept (the newest ones)


def _to_json(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def _host(tree: PyTree) -> PyTree:
  """Numpy copies of the leaves (0-d arrays stay arrays)."""
  return jax.tree_util.tree_map(np.asarray, tree)


def _process_options() -> ocp.options.MultiprocessingOptions:
  """One process: the defaults. Several: every process writes its own
  checkpoints (of host copies), each host in its own workdir."""
  if jax.process_count() == 1:
    return ocp.options.MultiprocessingOptions()
  index = jax.process_index()
  return ocp.options.MultiprocessingOptions(
      primary_host=None, active_processes={index},
      barrier_sync_key_prefix=f'process{index}')


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(),
                          multiprocessing_options=_process_options())


def save(directory: str, tree: PyTree, meta: Optional[dict] = None) -> None:
  """Writes `tree` (copied to host) and JSON-able `meta` to `directory`,
  replacing an earlier checkpoint there."""
  _checkpointer().save(
      os.path.abspath(directory),
      args=ocp.args.Composite(tree=ocp.args.StandardSave(_host(tree)),
                              meta=ocp.args.JsonSave(meta or {})),
      force=True)


def _is_legacy(path: str) -> bool:
  return os.path.isfile(path)


def read_meta(path: str) -> dict:
  """The metadata of a checkpoint (or of a legacy msgpack file).

  Raises:
    ValueError: when `path` holds no readable checkpoint.
  """
  if _is_legacy(path):
    return read_pytree(path)[1]
  try:
    restored = _checkpointer().restore(
        os.path.abspath(path), args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types for a bad directory
    raise ValueError(f'cannot read checkpoint {path!r}: {e}') from e
  return dict(restored['meta'])


def restore(path: str, template: PyTree) -> tuple[PyTree, dict]:
  """Restores a pytree shaped like `template`; returns (tree, meta).

  `path` is a checkpoint directory written by `save`, or a file of an
  earlier version (`save_pytree`).

  Raises:
    ValueError: when the checkpoint is unreadable or its tree does not match
      the template's structure or array shapes.
  """
  if _is_legacy(path):
    return load_pytree(path, template)
  meta = read_meta(path)
  try:
    restored = _checkpointer().restore(
        os.path.abspath(path), args=ocp.args.Composite(
            tree=ocp.args.StandardRestore(_host(template))))
  except Exception as e:
    raise ValueError(f'checkpoint {path!r} does not match the expected '
                     f'structure: {e}') from e
  tree = restored['tree']
  _check_shapes(path, tree, template)
  return tree, meta


def _check_shapes(path: str, tree: PyTree, template: PyTree) -> None:
  for got, want in zip(jax.tree_util.tree_leaves(tree),
                       jax.tree_util.tree_leaves(template)):
    if np.shape(got) != np.shape(want):
      raise ValueError(f'checkpoint {path!r} has an array of shape '
                       f'{np.shape(got)} where {np.shape(want)} is expected')


# ---------------------------------------------------------------------------
# Training states: the last KEEP_TRAINING epochs of a run.


def _manager(directory: str) -> ocp.CheckpointManager:
  legacy = os.path.join(directory, LEGACY_TRAINING_FILE)
  if os.path.exists(legacy):
    raise ValueError(
        f'{directory!r} holds a training checkpoint of an earlier version '
        f'({LEGACY_TRAINING_FILE}); delete it, or use another directory')
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
          max_to_keep=KEEP_TRAINING, enable_async_checkpointing=False,
          multiprocessing_options=_process_options()))


def save_training(directory: str, state: PyTree, epoch: int,
                  history: dict, fingerprint: Any) -> None:
  """Saves a training state after `epoch` epochs (see `restore_training`)."""
  meta = {'epoch': epoch, 'history': history,
          'fingerprint': _to_json(fingerprint)}
  manager = _manager(directory)
  manager.save(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave(_host(state)),
      meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  manager.close()


def restore_training(directory: str, template: PyTree, fingerprint: Any
                     ) -> Optional[tuple[PyTree, int, dict]]:
  """Restores (state, epochs_done, history) of the newest checkpoint, or
  None without one.

  Raises:
    ValueError: for a corrupted checkpoint, one of an earlier version, or
      one written by a run with a different fingerprint (configuration or
      data shapes).
  """
  if not os.path.isdir(directory):
    return None
  manager = _manager(directory)
  epoch = manager.latest_step()
  if epoch is None:
    return None
  try:
    meta = manager.restore(epoch, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']
  except Exception as e:
    raise ValueError(f'cannot read the training checkpoint in '
                     f'{directory!r}: {e}') from e
  if meta.get('fingerprint') != _to_json(fingerprint):
    raise ValueError(
        f'the checkpoint in {directory!r} was written by a different run '
        'configuration; use another directory or delete it')
  try:
    state = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_host(template))))['state']
  except Exception as e:
    raise ValueError(f'the training checkpoint in {directory!r} does not '
                     f'match the expected structure: {e}') from e
  manager.close()
  _check_shapes(directory, state, template)
  state = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(template),
      jax.tree_util.tree_leaves(state))
  history = {k: list(v) for k, v in meta['history'].items()}
  return state, int(meta['epoch']), history


# ---------------------------------------------------------------------------
# One flax-msgpack file: models of earlier versions, the MoS2 oracle cache.


def save_pytree(path: str, tree: PyTree, meta: Optional[dict] = None) -> None:
  """Writes `tree` (arrays are copied to host) and `meta` to one file."""
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
  """Restores a pytree shaped like `template` from the file `path`.

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
  _check_shapes(path, tree, template)
  return tree, meta
