"""Several devices or hosts: a device mesh, sharded rows, replicated state.

Everything here is plain `jax.sharding` (a 1-D `Mesh` and `NamedSharding`s);
the single-device code paths of the library do not change.

Data-parallel training: `training.TrainSettings(mesh=make_mesh())` shards
every minibatch over the mesh's devices and keeps parameters and optimizer
state replicated; XLA inserts the reduction of the gradients.

Row-parallel work (localization, sampling f^-1, re-simulation): the rows are
independent, so `localize_sharded` and `map_rows` split them into chunks of
at most `chunk_size` rows (bounded memory), pad each chunk to a multiple of
the device count, place it with `NamedSharding(mesh, P('data'))`, run the
compiled function (no collectives), drop the padding and concatenate:

  mesh = parallel.make_mesh()                  # all devices
  result = parallel.localize_sharded(localizer, params, x0, y_target, mesh,
                                     chunk_size=100_000)

Several processes (hosts): call `jax.distributed.initialize(...)` first in
every process; `make_mesh()` then spans the devices of all of them. Training
runs as one program over that mesh. Row-parallel work gives each process a
contiguous block of the rows, run on its own devices, and gathers the
results, so every process returns all rows (BUILD.md shows a launcher).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ipage_jax import localization

Array = jax.Array
PyTree = Any
AXIS = 'data'


# ---------------------------------------------------------------------------
# Meshes and placement.


def make_mesh(num_devices: Optional[int] = None, axis_name: str = AXIS, *,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D device mesh.

  Args:
    num_devices: use the first this many of `devices`; None or 0 = all.
    axis_name: name of the mesh axis the rows are sharded over.
    devices: candidate devices (default `jax.devices()`, i.e. the devices
      of every process after `jax.distributed.initialize`).

  Returns:
    A `Mesh` of shape (num_devices,) with an automatic axis.

  Raises:
    ValueError: for a count below 0 or above the devices available, or a
      partial mesh when several processes run (each must take part).
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is None or num_devices == 0:
    num_devices = len(devices)
  if (isinstance(num_devices, bool) or
      not isinstance(num_devices, (int, np.integer)) or num_devices < 1):
    raise ValueError(
        f'num_devices must be a non-negative int, got {num_devices!r}')
  if num_devices > len(devices):
    raise ValueError(f'num_devices={num_devices} but only {len(devices)} '
                     'devices are available')
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(
        f'with {jax.process_count()} processes the mesh must span all '
        f'{len(devices)} devices (num_devices = 0), got {num_devices}')
  return Mesh(np.asarray(devices[:num_devices]), (axis_name,),
              axis_types=(jax.sharding.AxisType.Auto,))


def mesh_from_config(cfg: Any) -> Optional[Mesh]:
  """The mesh of a `parallel` config section; None for a single device.

  Args:
    cfg: a section with `num_devices` (1 = one device, 0 = all, n = the
      first n), e.g. `default_config().parallel`; None means one device.
  """
  if cfg is None:
    return None
  num = int(cfg.get('num_devices', 1))
  if num == 1:
    return None
  mesh = make_mesh(num)
  return None if mesh.size == 1 else mesh


def row_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over every axis of `mesh`, the rest replicated."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of `mesh`."""
  return NamedSharding(mesh, P())


def _put(tree: PyTree, sharding: NamedSharding) -> PyTree:
  if jax.process_count() == 1 or sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  # Several processes: each holds the same host values and places the
  # shards its own devices own.
  def put(leaf):
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index])

  return jax.tree_util.tree_map(put, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of `tree` replicated on `mesh` (same on all hosts)."""
  return _put(tree, replicated_sharding(mesh))


def shard_rows(x: Any, mesh: Mesh) -> Array:
  """Places (n, ...) `x` with its rows split evenly over `mesh`.

  Raises:
    ValueError: when n is not a multiple of the device count (see
      `pad_to_multiple`).
  """
  shape = np.shape(x)
  if len(shape) < 1 or shape[0] % mesh.size:
    raise ValueError(f'{shape[0] if shape else "a scalar with no"} rows do '
                     f'not split evenly over {mesh.size} devices; pad them '
                     'with pad_to_multiple')
  return _put(x, row_sharding(mesh))


def constrain_rows(x: Array, mesh: Mesh) -> Array:
  """Inside jit: ask XLA to keep the rows of `x` split over `mesh`."""
  return jax.lax.with_sharding_constraint(x, row_sharding(mesh))


def constrain_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
  """Inside jit: ask XLA to keep every leaf of `tree` replicated."""
  return jax.lax.with_sharding_constraint(tree, replicated_sharding(mesh))


def to_host(tree: PyTree) -> PyTree:
  """Numpy copies of the leaves, gathered from other hosts if needed."""

  def get(leaf):
    if isinstance(leaf, jax.Array) and not (
        leaf.is_fully_addressable or leaf.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)

  return jax.tree_util.tree_map(get, tree)


# ---------------------------------------------------------------------------
# Uneven row counts.


def pad_to_multiple(x: Any, multiple: int) -> tuple[Any, int]:
  """Appends copies of the last row until the row count divides evenly.

  Args:
    x: (n, ...) array with n >= 1 (numpy or jax).
    multiple: the row count of the result is the smallest multiple of this
      (>= 1) that is >= n.

  Returns:
    (padded (ceil(n / multiple) * multiple, ...), n). The copies are valid
    inputs (unlike zeros, which a simulator may reject); `unpad` drops them.
  """
  if (isinstance(multiple, bool) or
      not isinstance(multiple, (int, np.integer)) or multiple < 1):
    raise ValueError(f'multiple must be an int >= 1, got {multiple!r}')
  n = np.shape(x)[0] if np.ndim(x) else 0
  if n < 1:
    raise ValueError(f'need an array of shape (n >= 1, ...), got '
                     f'{np.shape(x)}')
  extra = -n % multiple
  if extra == 0:
    return x, n
  xp = jnp if isinstance(x, jax.Array) else np
  tail = xp.repeat(x[-1:], extra, axis=0)
  return xp.concatenate([x, tail], axis=0), n


def unpad(x: Any, n: int) -> Any:
  """The first n rows of `x` (undoes `pad_to_multiple`)."""
  return x[:n]


def chunk_plan(n: int, chunk_size: int, num_devices: int) -> tuple[int, int]:
  """How `map_rows` splits n rows: (num_chunks, rows_per_chunk).

  Chunks are equal (one compiled shape), each a multiple of `num_devices`
  and at most `chunk_size` rows (0 = one chunk; a `chunk_size` below the
  device count gives chunks of one row per device), and together they hold
  n rows plus the least padding these rules allow.
  """
  if n < 1:
    raise ValueError(f'need at least one row, got {n}')
  if chunk_size < 0:
    raise ValueError(f'chunk_size must be >= 0, got {chunk_size}')
  if num_devices < 1:
    raise ValueError(f'num_devices must be >= 1, got {num_devices}')
  cap = math.inf if chunk_size == 0 else max(
      chunk_size // num_devices, 1) * num_devices
  num_chunks = 1 if n <= cap else math.ceil(n / cap)
  per_chunk = math.ceil(math.ceil(n / num_chunks) / num_devices) * num_devices
  return num_chunks, per_chunk


# ---------------------------------------------------------------------------
# Row-parallel execution.


def _local_mesh(mesh: Optional[Mesh]) -> Optional[Mesh]:
  """This process's devices of `mesh`, as a mesh with the same axis."""
  if mesh is None or jax.process_count() == 1:
    return mesh
  mine = [d for d in mesh.devices.flat
          if d.process_index == jax.process_index()]
  if not mine:
    raise ValueError(f'process {jax.process_index()} has no device in the '
                     'mesh')
  return Mesh(np.asarray(mine), (mesh.axis_names[0],),
              axis_types=(jax.sharding.AxisType.Auto,))


def _process_block(rows: Sequence[np.ndarray]
                   ) -> tuple[list[np.ndarray], int, int]:
  """This process's contiguous block of rows: (rows, block, n)."""
  n = rows[0].shape[0]
  count, index = jax.process_count(), jax.process_index()
  block = math.ceil(n / count)
  padded = [pad_to_multiple(r, block * count)[0] if r.shape[0] < block * count
            else r for r in rows]
  return [r[index * block:(index + 1) * block] for r in padded], block, n


def _run_chunks(fn: Callable[..., PyTree], shared: PyTree,
                rows: Sequence[Any], mesh: Optional[Mesh],
                chunk_size: int) -> list[PyTree]:
  """Runs fn(shared, *chunk_rows) per chunk on this process's devices.

  Returns:
    The per-chunk outputs as numpy; they still hold the padding rows (the
    caller drops them).
  """
  n = rows[0].shape[0]
  local = _local_mesh(mesh)
  num_dev = 1 if local is None else local.size
  num_chunks, per_chunk = chunk_plan(n, chunk_size, num_dev)
  rows = [pad_to_multiple(r, num_chunks * per_chunk)[0] for r in rows]
  if local is not None:
    shared = jax.device_put(shared, replicated_sharding(local))
  outs = []
  for c in range(num_chunks):
    part = [r[c * per_chunk:(c + 1) * per_chunk] for r in rows]
    if local is not None:
      part = [jax.device_put(p, row_sharding(local)) for p in part]
    outs.append(jax.tree_util.tree_map(np.asarray, fn(shared, *part)))
  return outs


def _check_rows(rows: Sequence[Any], chunk_size: int) -> list[np.ndarray]:
  rows = [np.asarray(r) for r in rows]
  if not rows or any(r.ndim < 1 for r in rows):
    raise ValueError('rows must be arrays of shape (n, ...)')
  n = rows[0].shape[0]
  if n < 1:
    raise ValueError('rows must hold at least one row')
  if any(r.shape[0] != n for r in rows):
    raise ValueError(f'row arrays disagree on n: '
                     f'{[r.shape for r in rows]}')
  if (isinstance(chunk_size, bool) or
      not isinstance(chunk_size, (int, np.integer)) or chunk_size < 0):
    raise ValueError(f'chunk_size must be an int >= 0, got {chunk_size!r}')
  return rows


def _gather(tree: PyTree) -> PyTree:
  """Stacks every process's copy of a host pytree: leaves (P, ...)."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[None], tree)
  return jax.tree_util.tree_map(
      np.asarray, multihost_utils.process_allgather(tree, tiled=False))


def map_rows(fn: Callable[..., PyTree], shared: PyTree, *rows: Any,
             mesh: Optional[Mesh] = None, chunk_size: int = 0) -> PyTree:
  """Applies a row-wise function over devices (and hosts), chunk by chunk.

  Args:
    fn: `fn(shared, *rows_chunk) -> pytree of (rows, ...) arrays`, acting on
      rows independently, ideally jitted (it is called once per chunk with
      sharded inputs; every chunk has the same shape).
    shared: pytree passed whole (e.g. parameters), replicated.
    *rows: arrays of shape (n, ...) sharing n.
    mesh: devices to split the rows over (None: the default device).
    chunk_size: most rows per call (0: all in one call).

  Returns:
    fn's output pytree for all n rows, as numpy arrays (identical on every
    process).
  """
  rows = _check_rows(rows, chunk_size)
  block, n = rows[0].shape[0], rows[0].shape[0]
  if jax.process_count() > 1 and mesh is not None:
    rows, block, n = _process_block(rows)
  outs = _run_chunks(fn, shared, rows, mesh, chunk_size)
  local = jax.tree_util.tree_map(
      lambda *a: np.concatenate(a, axis=0)[:block], *outs)
  if jax.process_count() > 1 and mesh is not None:
    local = jax.tree_util.tree_map(
        lambda a: a.reshape((-1,) + a.shape[2:])[:n], _gather(local))
  return local


def localize_sharded(localizer: Callable[..., localization.LocalizeResult],
                     params: PyTree, x0: Any, y_target: Any,
                     mesh: Optional[Mesh] = None, chunk_size: int = 0
                     ) -> localization.LocalizeResult:
  """Row-parallel, chunked localization; same rows as one unsharded call.

  Localization moves every row on its own (see `localization`), so sharding
  and chunking the rows changes nothing but float rounding.

  Args:
    localizer: from `localization.make_localizer`: `(params, x0 (n, D),
      y_target (M,) or (n, M)) -> LocalizeResult`.
    params: its parameters (replicated on every device).
    x0: (n, D) starting designs, any n >= 1.
    y_target: (M,) shared target or (n, M) one per row.
    mesh: devices to split the rows over (None: the default device only).
    chunk_size: most rows per compiled call (0: all rows in one call).

  Returns:
    A `LocalizeResult` for the n rows: x (n, D), loss (n,), boundary (n,);
    `steps` is the most any chunk took; `trace` (if the localizer keeps one)
    is the row-weighted mean of the chunks' traces, which counts padding
    rows (copies of the last row), so it matches an unsharded call only
    when no padding was needed.
  """
  x0 = np.asarray(x0)
  if not np.issubdtype(x0.dtype, np.floating):
    x0 = x0.astype(np.float32)
  y_target = np.asarray(y_target, x0.dtype)
  if x0.ndim != 2:
    raise ValueError(f'x0 must have shape (n, D), got {x0.shape}')
  if not (np.all(np.isfinite(x0)) and np.all(np.isfinite(y_target))):
    raise ValueError('x0 or y_target contains NaN or inf values')
  per_row = y_target.ndim == 2
  if per_row and y_target.shape[0] != x0.shape[0]:
    raise ValueError(f'y_target must have shape (M,) or ({x0.shape[0]}, M), '
                     f'got {y_target.shape}')
  rows = [x0, y_target] if per_row else [x0]
  rows = _check_rows(rows, chunk_size)
  block, n = x0.shape[0], x0.shape[0]
  if jax.process_count() > 1 and mesh is not None:
    rows, block, n = _process_block(rows)

  if per_row:
    fn = lambda p, x, y: localizer(p, x, y)
    shared = params
  else:
    fn = lambda s, x: localizer(s[0], x, s[1])
    shared = (params, y_target)
  outs = _run_chunks(fn, shared, rows, mesh, chunk_size)

  cat = lambda name: np.concatenate([getattr(o, name) for o in outs])[:block]
  local = {'x': cat('x'), 'loss': cat('loss'), 'boundary': cat('boundary'),
           'steps': np.max([np.asarray(o.steps) for o in outs])}
  has_trace = outs[0].trace is not None
  if has_trace:
    weights = np.asarray([o.x.shape[0] for o in outs], np.float64)
    traces = np.stack([np.asarray(o.trace, np.float64) for o in outs])
    local['trace_sum'] = weights @ traces
    local['trace_rows'] = np.asarray(weights.sum())
  stacked = _gather(local)
  flat = lambda a: a.reshape((-1,) + a.shape[2:])[:n]
  trace = None
  if has_trace:
    trace = jnp.asarray(stacked['trace_sum'].sum(0) /
                        stacked['trace_rows'].sum(), x0.dtype)
  return localization.LocalizeResult(
      x=jnp.asarray(flat(stacked['x'])),
      loss=jnp.asarray(flat(stacked['loss'])),
      boundary=jnp.asarray(flat(stacked['boundary'])),
      steps=jnp.asarray(stacked['steps'].max(), jnp.int32),
      trace=trace)


__all__: Sequence[str] = (
    'AXIS', 'chunk_plan', 'constrain_replicated', 'constrain_rows',
    'localize_sharded', 'make_mesh', 'map_rows', 'mesh_from_config',
    'pad_to_multiple', 'replicate', 'replicated_sharding', 'row_sharding',
    'shard_rows', 'to_host', 'unpad')
