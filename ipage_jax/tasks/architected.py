"""Architected materials: 32 x 32 periodic density cells -> effective modulus.

x: the cell's densities in [0, 1], flattened row-major (row = y, column = x),
D = 1024. y: the mean of the two axial Young's moduli of the periodic cell in
plane stress, normalized by the solid's modulus (`homogenization`).

Designs are drawn from smooth periodic Gaussian random fields: each cell sums
`num_scales` white-noise fields filtered with Gaussian kernels of random widths
(log-uniform in `length_scale_range`, pixels) and random weights, optionally
mirror-symmetrizes the sum about both mid-lines, and thresholds it so that a
fraction `porosity` (uniform in `porosity_range` per cell) of the pixels is
void (0) and the rest solid (1). The default 'network' pattern puts solid
where |field| is small (round pores at low porosity, connected walls at high
porosity); 'excursion' puts solid where the field is large (blobs, mostly
disconnected above porosity 0.55, so y collapses to the void stiffness).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ipage_jax.tasks import base
from ipage_jax.tasks import homogenization

NAME = 'architected'
SIZE = 32
X_DIM = SIZE * SIZE
Y_DIM = 1
DATA_SIZE = 20_000
POROSITY_RANGE = (0.25, 0.75)
LENGTH_SCALE_RANGE = (1.5, 5.0)
NUM_SCALES = 2
PATTERNS = ('network', 'excursion')
PATTERN = 'network'
# Fastest of 1, 64, 256 on a 2-core CPU (docs/fem.md): a batch runs as many
# PCG iterations as its slowest cell needs.
BATCH_SIZE = 64
# y over 512 cells of `generate_cells(PRNGKey(0), 512)`: quartiles 0.0145,
# 0.059, 0.155, range 0.002-0.42 (docs/fem.md). Target: the median, rounded.
DEFAULT_TARGET = np.array([0.06], np.float32)
# The lower and upper quartiles, rounded: protocol B also runs there
# (benchmark), away from the modulus of grey-noise cells (~0.09, docs).
EXTRA_TARGETS = (np.array([0.015], np.float32), np.array([0.15], np.float32))
# Settings recorded in (and checked against) a cache file.
_SIM_SETTINGS = {
    'size': SIZE,
    'e_min': homogenization.E_MIN,
    'penalty': homogenization.PENALTY,
    'nu': homogenization.POISSON,
}

Progress = Callable[[int, int], None]



def _check_range(name, lo_hi, lo_ok, hi_ok):
  lo, hi = lo_hi
  if not lo_ok <= lo <= hi <= hi_ok:
    raise ValueError(
        f'{name} must satisfy {lo_ok} <= low <= high <= {hi_ok}; got {lo_hi!r}'
    )


def _one_cell(key, size, porosity_range, length_scale_range, num_scales,
              pattern, mirror):
  """One `(size, size)` binary cell (1 = solid) from one key."""
  k_noise, k_scale, k_weight, k_por = jax.random.split(key, 4)
  noise = jax.random.normal(k_noise, (num_scales, size, size))
  log_lo, log_hi = np.log(length_scale_range)
  ell = jnp.exp(jax.random.uniform(
      k_scale, (num_scales,), minval=log_lo, maxval=log_hi))
  freq = np.fft.fftfreq(size)
  k2 = jnp.asarray(freq[:, None] ** 2 + freq[None, :] ** 2, jnp.float32)
  # Gaussian kernel of standard deviation ell pixels, applied in Fourier space.
  gain = jnp.exp(-2.0 * np.pi**2 * ell[:, None, None] ** 2 * k2[None])
  fields = jnp.fft.ifft2(jnp.fft.fft2(noise) * gain).real
  fields = fields / jnp.std(fields, axis=(1, 2), keepdims=True)
  weights = jax.random.uniform(k_weight, (num_scales,), minval=0.2)
  field = jnp.einsum('s,sij->ij', weights, fields)
  if mirror:
    field = field + field[::-1, :]
    field = field + field[:, ::-1]
  if pattern == 'network':
    # Solid near the zero level set: walls that stay connected when thin.
    field = -jnp.abs(field)
  porosity = jax.random.uniform(
      k_por, (), minval=porosity_range[0], maxval=porosity_range[1])
  num = size * size
  num_void = jnp.clip(jnp.round(porosity * num), 1, num - 1).astype(jnp.int32)
  # Ties (mirror copies) share a side, so the cell keeps its symmetry.
  threshold = jnp.sort(field.ravel())[num_void]
  return (field >= threshold).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=(
    'size', 'porosity_range', 'length_scale_range', 'num_scales', 'pattern',
    'mirror'))
def _cells_from_keys(keys, *, size, porosity_range, length_scale_range,
                     num_scales, pattern, mirror):
  fn = functools.partial(
      _one_cell, size=size, porosity_range=porosity_range,
      length_scale_range=length_scale_range, num_scales=num_scales,
      pattern=pattern, mirror=mirror)
  return jax.vmap(fn)(keys)


def _generator_options(size, porosity_range, length_scale_range, num_scales,
                       pattern, mirror):
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (
      size < 2):
    raise ValueError(f'size must be an integer >= 2; got {size!r}')
  _check_range('porosity_range', porosity_range, 0.0, 1.0)
  _check_range('length_scale_range', length_scale_range, 1e-3, np.inf)
  if isinstance(num_scales, bool) or not isinstance(
      num_scales, (int, np.integer)) or num_scales < 1:
    raise ValueError(
        f'num_scales must be a positive integer; got {num_scales!r}')
  if pattern not in PATTERNS:
    raise ValueError(f'pattern must be one of {PATTERNS}; got {pattern!r}')
  return dict(
      size=int(size),
      porosity_range=tuple(float(v) for v in porosity_range),
      length_scale_range=tuple(float(v) for v in length_scale_range),
      num_scales=int(num_scales),
      pattern=pattern,
      mirror=bool(mirror),
  )


def generate_cells(
    key: jax.Array,
    n: int,
    *,
    size: int = SIZE,
    porosity_range: tuple[float, float] = POROSITY_RANGE,
    length_scale_range: tuple[float, float] = LENGTH_SCALE_RANGE,
    num_scales: int = NUM_SCALES,
    pattern: str = PATTERN,
    mirror: bool = False,
) -> jax.Array:
  """Random binary periodic cells.

  Args:
    key: PRNG key; cell i depends only on `jax.random.split(key, n)[i]`.
    n: number of cells.
    size: cells are `(size, size)` pixels.
    porosity_range: (low, high); each cell's void fraction is uniform in it
      (rounded to whole pixels).
    length_scale_range: (low, high) Gaussian filter widths in pixels, drawn
      log-uniformly, one per scale.
    num_scales: number of superposed filtered noise fields.
    pattern: 'network' (solid where |field| is small: pores at low porosity,
      connected walls at high porosity) or 'excursion' (solid where the field
      is large: blobs, often disconnected at high porosity).
    mirror: symmetrize about both mid-lines (orthotropic cells).

  Returns:
    `(n, size, size)` float32 in {0, 1} (1 = solid).
  """
  n = base.check_count(n)
  opts = _generator_options(size, porosity_range, length_scale_range,
                            num_scales, pattern, mirror)
  return _cells_from_keys(jax.random.split(key, n), **opts)


def _clip01(x):
  # Unlike jnp.clip, keeps the full gradient at exactly 0 and 1.
  return jnp.where(x < 0.0, 0.0, jnp.where(x > 1.0, 1.0, x))


def simulate(x: jax.Array, **options) -> jax.Array:
  """FEM forward process.

  Args:
    x: `(..., 1024)` densities (row-major 32 x 32 cells); values outside
      [0, 1] are clipped.
    **options: solver settings passed to `homogenization.homogenize`.

  Returns:
    `(..., 1)` mean axial Young's modulus over the solid's modulus.
  """
  x = base.check_designs(x, X_DIM)
  cells = _clip01(x).reshape(x.shape[:-1] + (SIZE, SIZE))
  return homogenization.effective_modulus(cells, **options)[..., None]


@jax.jit
def augment(key: jax.Array, x: jax.Array) -> jax.Array:
  """Random symmetries of flattened square cells that keep their modulus.

  Each cell gets its own periodic shift (uniform over the pixel grid) and
  one of the 8 symmetries of the square (rotations by multiples of 90
  degrees, with or without a transposition). All of them map a periodic
  cell to one with the same effective tensor up to a swap of the axes (and
  of the shear sign), so y, the mean of the two axial moduli, is unchanged.

  Args:
    key: PRNG key.
    x: (n, s * s) densities, row-major s x s cells (any s).

  Returns:
    (n, s * s) the transformed cells.
  """
  n, d = _square_cells(x).shape
  size = math.isqrt(d)
  k_shift, k_sym = jax.random.split(key)
  shifts = jax.random.randint(k_shift, (n, 2), 0, size)
  symmetry = jax.random.randint(k_sym, (n,), 0, 8)

  def one(cell, shift, sym):
    cell = jnp.roll(cell, shift, axis=(0, 1))
    cell = jnp.where(sym >= 4, cell.T, cell)
    return jnp.stack([jnp.rot90(cell, k) for k in range(4)])[sym % 4]

  return jax.vmap(one)(x.reshape(n, size, size), shifts,
                       symmetry).reshape(n, d)


THRESHOLD = 0.5


def binarize(x, threshold: float = THRESHOLD) -> np.ndarray:
  """Manufacturable cells: densities >= `threshold` solid (1), else void (0).

  Args:
    x: `(..., 1024)` densities.
    threshold: the cut (0.5: nearest of 0 and 1).

  Returns:
    Float32 array of x's shape with values in {0, 1}.
  """
  return (np.asarray(x) >= threshold).astype(np.float32)


def porosity(x) -> np.ndarray:
  """`(...,)` void fraction of the binarized cells `(..., s * s)`."""
  return np.asarray(_void_fraction(_square_cells(x)))


def _void_fraction(x: jax.Array) -> jax.Array:
  """`(...,)` share of the pixels of x `(..., d)` below THRESHOLD."""
  return 1.0 - jnp.mean((x >= THRESHOLD).astype(jnp.float32), -1)


def solid_connectivity(x) -> np.ndarray:
  """`(...,)` share of each cell's solid in its largest periodic component.

  Solid pixels (x >= 0.5) are connected through edges (4-neighbourhood) on
  the periodic 32 x 32 grid, so a component may wrap around the cell; a
  cell without solid gets 0. 1 means all solid forms one piece.

  Args:
    x: `(..., 1024)` densities, row-major cells.
  """
  from scipy import ndimage  # host-side evaluation only

  cells = binarize(x).reshape(-1, SIZE, SIZE).astype(bool)
  out = np.zeros(len(cells))
  for i, cell in enumerate(cells):
    labels, count = ndimage.label(cell)
    if count == 0:
      continue
    parent = np.arange(count + 1)

    def find(a):
      while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
      return a

    # Periodic boundaries: labels touching across opposite edges merge.
    for a, b in ((labels[0], labels[-1]), (labels[:, 0], labels[:, -1])):
      for u, v in zip(a, b):
        if u and v:
          parent[find(u)] = find(v)
    roots = np.array([find(k) for k in range(1, count + 1)])
    sizes = np.bincount(roots[labels[labels > 0] - 1])
    out[i] = sizes.max() / cell.sum()
  return out.reshape(np.shape(x)[:-1])


def _square_cells(x) -> jax.Array:
  """x `(..., s * s)` as a float array; refuses rows that are not square."""
  x = jnp.asarray(x)
  if x.ndim < 1 or math.isqrt(x.shape[-1]) ** 2 != x.shape[-1]:
    raise ValueError(f'cells must be square: got x of shape {x.shape}')
  return base.check_designs(x, x.shape[-1])


def _solid_labels(solid: jax.Array) -> jax.Array:
  """`(n, s, s)` int32 periodic 4-neighbour component labels of `solid`.

  Each solid pixel gets the smallest flat index of its component; void
  pixels get s * s. Labels start at the pixel's own index and shrink by a
  min over the four periodic neighbours (within the solid) and by pointer
  jumping (a pixel takes its label's label), until nothing changes; both
  keep every label an index of a pixel of the same component.
  """
  n, size = solid.shape[0], solid.shape[1]
  void = size * size
  own = jnp.arange(void, dtype=jnp.int32).reshape(size, size)
  start = jnp.where(solid, own, void)

  def sweep(labels):
    low = labels
    for axis in (1, 2):
      for shift in (1, -1):
        low = jnp.minimum(low, jnp.roll(labels, shift, axis))
    low = jnp.where(solid, low, void).reshape(n, void)
    padded = jnp.concatenate([low, jnp.full((n, 1), void, low.dtype)], 1)
    return jnp.take_along_axis(padded, low, 1).reshape(n, size, size)

  def body(state):
    labels, _ = state
    new = sweep(labels)
    return new, jnp.any(new != labels)

  return jax.lax.while_loop(lambda state: state[1], body,
                            (start, jnp.array(True)))[0]


@jax.jit
def remove_islands(x: jax.Array) -> jax.Array:
  """The cells with only their largest periodic solid component left.

  Solid pixels (x >= 0.5) outside the largest 4-neighbour component of the
  periodic cell (components may wrap around) become void (0): a solid
  island floating in void cannot be made and carries no load. Ties go to
  the component holding the lowest pixel index. `solve.repair` applies it
  to the binarized candidates of the architected task before they are
  ranked. Jittable, runs on any device.

  Args:
    x: `(..., s * s)` densities, row-major s x s cells (any s; the task's
      are 32 x 32).

  Returns:
    `(..., s * s)` x with the islands' pixels set to 0.
  """
  x = _square_cells(x)
  d = x.shape[-1]
  size = math.isqrt(d)
  cells = x.reshape(-1, size, size)
  solid = cells >= THRESHOLD
  labels = _solid_labels(solid).reshape(len(cells), d)
  sizes = jax.vmap(lambda row: jnp.bincount(row, length=d + 1))(labels)
  largest = jnp.argmax(sizes[:, :d], axis=1)
  island = solid.reshape(labels.shape) & (labels != largest[:, None])
  return jnp.where(island, 0.0, cells.reshape(labels.shape)).astype(
      x.dtype).reshape(x.shape)


@jax.jit
def in_porosity_range(x: jax.Array) -> jax.Array:
  """`(...,)` bool: the binarized cell's porosity within POROSITY_RANGE.

  The data's cells are drawn with porosities in that range, so a design
  outside it lies outside the design space the data describe.

  Args:
    x: `(..., s * s)` densities, row-major s x s cells (any s).
  """
  porosity_of = _void_fraction(_square_cells(x))
  lo, hi = POROSITY_RANGE
  return (porosity_of >= lo) & (porosity_of <= hi)


# A cell is "connected" when its largest periodic solid component holds at
# least this share of the solid; a pixel is "binary" within BINARY_TOL of 0
# or 1.
CONNECTED_SHARE = 0.95
BINARY_TOL = 0.05


def design_stats(x) -> dict:
  """Whether designs `(n, 1024)` are manufacturable cells, as floats.

  Returns:
    binary_pixels: share of pixels within BINARY_TOL of 0 or 1;
    porosity_mean / porosity_min / porosity_max: of the binarized cells;
    connected: share of cells whose largest periodic solid component holds
      >= CONNECTED_SHARE of their solid (`solid_connectivity`).
  """
  x = np.asarray(x, np.float32).reshape(-1, X_DIM)
  near = np.minimum(np.abs(x), np.abs(x - 1.0)) <= BINARY_TOL
  por = porosity(x)
  return dict(binary_pixels=float(near.mean()),
              porosity_mean=float(por.mean()),
              porosity_min=float(por.min()),
              porosity_max=float(por.max()),
              connected=float(np.mean(solid_connectivity(x)
                                      >= CONNECTED_SHARE)))


def sample_prior(key: jax.Array, n: int) -> jax.Array:
  """`(n, 1024)` float32 flattened cells from `generate_cells` (defaults)."""
  return generate_cells(key, n).reshape(-1, X_DIM)


@functools.partial(jax.jit, static_argnames=('gen_opts',))
def _batch(keys, gen_opts):
  cells = _cells_from_keys(keys, **dict(gen_opts))
  y = homogenization.effective_modulus(cells)
  return cells.reshape(keys.shape[0], -1), y[:, None]


def save_dataset(path: str, x: np.ndarray, y: np.ndarray, **meta) -> None:
  """Writes `x (n, D)`, `y (n, 1)`, the simulator settings and scalar `meta`.

  The npz file at `path` appears complete or not at all (temp file in the
  same folder, then os.replace).
  """
  meta = {**_SIM_SETTINGS, **meta}
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, x=x, y=y, **{k: np.asarray(v) for k, v in meta.items()})
    os.chmod(tmp, 0o644)  # mkstemp creates owner-only files
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_dataset(path: str, n: Optional[int] = None, **expected):
  """Reads a cache written by `make_dataset` / `save_dataset`.

  Args:
    path: npz file with `x (N, 1024)`, `y (N, 1)` and the simulator settings.
    n: rows to return (the first n); None returns all.
    **expected: further stored scalars that must match (e.g. pattern='network',
      mirror=False).

  Returns:
    float32 `x (n, 1024)`, `y (n, 1)`. Raises ValueError when shapes,
    simulator settings or `expected` differ, or when the file holds fewer
    than `n` rows.
  """
  with np.load(path) as data:
    if 'x' not in data or 'y' not in data:
      raise ValueError(f'{path}: expected arrays x and y; got {data.files}')
    x, y = data['x'], data['y']
    for name, value in {**_SIM_SETTINGS, **expected}.items():
      if name not in data:
        raise ValueError(f'{path}: setting {name} is missing; regenerate it')
      stored = data[name].item()
      same = (np.isclose(stored, value) if isinstance(value, float)
              else stored == value)
      if not same:
        raise ValueError(
            f'{path}: setting {name}={stored!r} differs from {value!r}; '
            'regenerate the cache')
  if x.ndim != 2 or x.shape[1] != X_DIM or y.shape != (x.shape[0], Y_DIM):
    raise ValueError(
        f'{path}: expected x (n, {X_DIM}) and y (n, {Y_DIM}); got '
        f'{x.shape} and {y.shape}')
  if n is not None and x.shape[0] < n:
    raise ValueError(f'{path}: holds {x.shape[0]} rows, fewer than n={n}')
  rows = slice(None) if n is None else slice(0, n)
  return x[rows].astype(np.float32), y[rows].astype(np.float32)


def make_dataset(
    key: jax.Array,
    n: Optional[int] = None,
    *,
    batch_size: int = BATCH_SIZE,
    cache_path: Optional[str] = None,
    progress: Optional[Progress] = None,
    pattern: str = PATTERN,
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """Cells and their moduli: x `(n, 1024)`, y `(n, 1)`, float32 numpy.

  Args:
    key: PRNG key; row i is `generate_cells(key, n)[i]` (independent of
      `batch_size`).
    n: rows; None gives `DATA_SIZE`.
    batch_size: cells per compiled FEM call (the last batch is padded).
    cache_path: if the file exists, rows are loaded from it (`load_dataset`;
      the key is then not used); otherwise the generated data are written
      there.
    progress: called as `progress(done, n)` after each batch.
    pattern: cell family (see `generate_cells`).
    mirror: mirror-symmetric cells (see `generate_cells`).
  """
  n = DATA_SIZE if n is None else base.check_count(n)
  batch_size = base.check_count(batch_size)
  if cache_path is not None and os.path.exists(cache_path):
    return load_dataset(cache_path, n, pattern=pattern, mirror=bool(mirror))
  gen_opts = tuple(sorted(_generator_options(
      SIZE, POROSITY_RANGE, LENGTH_SCALE_RANGE, NUM_SCALES, pattern,
      mirror).items()))
  keys = jax.random.split(key, n)
  batch_size = min(batch_size, n)
  xs, ys = [], []
  for start in range(0, n, batch_size):
    chunk = keys[start:start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = jnp.concatenate([chunk, keys[:pad]])
    x, y = _batch(chunk, gen_opts)
    xs.append(np.asarray(x)[:batch_size - pad])
    ys.append(np.asarray(y)[:batch_size - pad])
    if progress is not None:
      progress(min(start + batch_size, n), n)
  x = np.concatenate(xs).astype(np.float32)
  y = np.concatenate(ys).astype(np.float32)
  if not np.all(np.isfinite(y)):
    raise ValueError('the FEM returned non-finite moduli')
  if cache_path is not None:
    save_dataset(cache_path, x, y, pattern=pattern, mirror=bool(mirror))
  return x, y


def task() -> base.Task:
  """The architected-materials `Task` (exact FEM simulator)."""
  return base.Task(
      name=NAME,
      x_dim=X_DIM,
      y_dim=Y_DIM,
      lower=np.zeros(X_DIM, np.float32),
      upper=np.ones(X_DIM, np.float32),
      default_target=DEFAULT_TARGET.copy(),
      sample_prior=sample_prior,
      make_dataset=make_dataset,
      data_size=DATA_SIZE,
      simulate=simulate,
      simulator_kind='exact',
      x_names=tuple(f'rho_{i}_{j}' for i in range(SIZE) for j in range(SIZE)),
      y_names=('E_mean',),
      augment=augment,
      extra_targets=tuple(t.copy() for t in EXTRA_TARGETS),
      design_stats=design_stats,
      repair=remove_islands,
      feasible=in_porosity_range,
  )
