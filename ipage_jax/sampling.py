"""Exploratory latent samplers: SRS, Latin hypercube and maximin LHS.

Every sampler is a pure function `(key, n, d, **opts) -> (n, d)` of its PRNG
key that returns points in the open unit cube (0, 1)^d; `to_normal` maps them
to standard-normal latent vectors by the inverse normal CDF. `n`, `d` and the
options are static (one compile per shape and options), the key is traced.

Maximin LHS works on the centered lattice `(perm + 0.5) / n` and improves a
random Latin design by column swaps (exchange the entries of two rows in one
column, which keeps the Latin property). Each step draws row a with weight
`(s / nn_a)^q` (nn_a its squared nearest-neighbour distance, s the smallest
one), i.e. mostly a row of one of the closest pairs, a random partner b and a
random column, and accepts the swap when it lowers the Morris-Mitchell
criterion `phi = sum_{i<k} (s / d2_ik)^q` (d2 squared distances; p = 2 q in
their notation), whose change is computed exactly from the two affected rows
of the stored distance matrix. A step therefore costs O(n), not O(n^2 d).
Every `chunk` steps the exact minimum distance is read off and the best
design so far is kept. Memory: one (n, n) float32 matrix per candidate
(4 MB at n = 1000).

References: Morris & Mitchell (1995), "Exploratory designs for computational
experiments", J. Stat. Plan. Inference 43; Jin, Chen & Sudjianto (2005), "An
efficient algorithm for constructing optimal design of computer experiments",
J. Stat. Plan. Inference 134.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Callable

import jax
import jax.numpy as jnp

Sampler = Callable[..., jax.Array]

_SAMPLER_NAMES = ('srs', 'lhs', 'maximin_lhs')
# Largest distance-matrix memory maximin_lhs allocates (num_candidates n^2).
_MAX_MATRIX_BYTES = 2**32


def _check_size(name, value):
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f'{name} must be an int, got {value!r}') from None
  if value < 1:
    raise ValueError(f'{name} must be >= 1, got {value}')
  return value


def _float_dtype(dtype):
  dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'dtype must be a floating dtype, got {dtype}')
  return jax.dtypes.canonicalize_dtype(dtype)


@functools.partial(jax.jit, static_argnames=('n', 'd', 'dtype'))
def _srs(key, n, d, dtype):
  tiny = jnp.finfo(dtype).tiny
  return jax.random.uniform(key, (n, d), dtype, minval=tiny, maxval=1.0)


def srs(key: jax.Array, n: int, d: int, *, dtype=None) -> jax.Array:
  """Simple random sampling: i.i.d. uniform points.

  Args:
    key: PRNG key.
    n: number of points.
    d: dimension.
    dtype: float dtype of the result (default: JAX's default float).

  Returns:
    (n, d) points in the open unit cube.
  """
  n, d = _check_size('n', n), _check_size('d', d)
  return _srs(key, n, d, _float_dtype(dtype))


# Each sampler draws all its random bits in one call: every separate draw
# compiles its own copy of the threefry hash, which dominates compile time.


def _unit_from_bits(bits):
  """uint32 bits -> float32 uniforms in [0, 1), same shape."""
  mantissa = (bits >> 9) | jnp.uint32(0x3F800000)
  return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0


def _perm_from_bits(bits, n, d):
  """(d * n,) uint32 bits -> (n, d) int32, each column a permutation.

  Sorting random keys (ties, of probability ~n^2 / 2^33 per column, still
  give a permutation).
  """
  return jnp.argsort(bits.reshape(d, n), axis=1).T.astype(jnp.int32)


def _to_unit(perm, u, dtype):
  """Lattice indices (n, d) -> points inside their strata, (n, d) in (0, 1).

  Args:
    perm: (n, d) int stratum indices.
    u: (n, d) float32 uniforms in [0, 1) for the offsets inside the strata,
      or None for the centers.
    dtype: result dtype.

  The jittered offset is kept a few ulps away from the stratum edges, so
  float rounding can never move a point into the neighbouring stratum or
  onto 0 or 1.
  """
  n = perm.shape[0]
  if u is None:
    offset = jnp.asarray(0.5, dtype)
  else:
    margin = min(1.0, 4.0 * n * float(jnp.finfo(dtype).eps))
    offset = 0.5 + (u.astype(dtype) - 0.5) * (1.0 - margin)
  return (perm.astype(dtype) + offset) / n


@functools.partial(jax.jit, static_argnames=('n', 'd', 'jitter', 'dtype'))
def _lhs(key, n, d, jitter, dtype):
  bits = jax.random.bits(key, ((1 + jitter) * n * d,), jnp.uint32)
  perm = _perm_from_bits(bits[: n * d], n, d)
  u = _unit_from_bits(bits[n * d :]).reshape(n, d) if jitter else None
  return _to_unit(perm, u, dtype)


def lhs(
    key: jax.Array, n: int, d: int, *, jitter: bool = True, dtype=None
) -> jax.Array:
  """Latin hypercube sample: one point per stratum in every 1-D projection.

  Point i of column j lies in stratum `perm_j[i]`, i.e. in
  `[perm_j[i] / n, (perm_j[i] + 1) / n)`, uniformly inside it (`jitter=True`)
  or at its center (`jitter=False`).

  Args:
    key: PRNG key.
    n: number of points (= strata per axis).
    d: dimension.
    jitter: place points uniformly inside their strata (else centered).
    dtype: float dtype of the result (default: JAX's default float).

  Returns:
    (n, d) points in the open unit cube.
  """
  n, d = _check_size('n', n), _check_size('d', d)
  return _lhs(key, n, d, bool(jitter), _float_dtype(dtype))


# ----------------------------------------------------------------------------
# Maximin LHS.


def _pairwise_sq(c):
  """(n, d) float lattice coords -> (n, n) squared distances, inf diagonal."""
  sq = jnp.sum(c * c, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * (c @ c.T)
  # The exact values are integers; rounding removes the matmul's error.
  d2 = jnp.maximum(jnp.round(d2), 0.0)
  n = c.shape[0]
  return jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2)


def _optimize_one(perm, u, q):
  """Improves one lattice LHS by column swaps.

  Args:
    perm: (n, d) int32 starting design (column permutations of 0..n-1).
    u: (num_chunks, chunk, 3) float32 uniforms in [0, 1) driving the steps.
    q: exponent on squared distances.

  Returns:
    (best min squared distance in lattice units, (n, d) int32 best design).
  """
  n, d = perm.shape
  # Centering the integer coordinates keeps the Gram matrix small enough to
  # be exact in float32 for all but the largest n * d.
  half = (n - 1) // 2
  ct = (perm - half).astype(jnp.float32).T  # (d, n): columns contiguous
  d2 = _pairwise_sq(ct.T)
  idx = jnp.arange(n)

  def terms(d2_row, s):
    return (s / d2_row) ** q  # phi's terms; the inf diagonal gives 0

  def step(state, u):
    ct, d2, near, s = state
    # Row a with probability ~ (s / near_a)^q, i.e. mostly a row of one of
    # the closest pairs; b uniform among the others; column j uniform.
    cdf = jnp.cumsum((s / near) ** q)
    a = jnp.minimum(jnp.sum(cdf < u[0] * cdf[-1]), n - 1).astype(jnp.int32)
    b = (a + 1 + jnp.floor(u[1] * (n - 1)).astype(jnp.int32)) % n
    j = jnp.minimum(jnp.floor(u[2] * d).astype(jnp.int32), d - 1)
    ab = jnp.stack([a, b])
    old_col = ct[j]
    c_ab = old_col[ab]
    e = (old_col[None, :] - c_ab[:, None]) ** 2  # (2, n)
    # Materialized once: the writes at the end must not read d2, or XLA
    # copies the whole (n, n) matrix every step instead of updating it in
    # place.
    rows = jax.lax.optimization_barrier(d2[ab])  # (2, n)
    # Exact change of phi: only pairs with a or b change; the pair (a, b)
    # keeps its distance, so it is left out of both sums.
    other = ((idx != a) & (idx != b))[None, :]
    old = jnp.sum(jnp.where(other, terms(rows, s), 0.0))
    new = jnp.sum(jnp.where(other, terms(rows - e + e[::-1], s), 0.0))
    accept = new < old  # False for an inf (or nan) sum
    col = old_col.at[ab].set(jnp.where(accept, c_ab[::-1], c_ab))
    ct = ct.at[j].set(col)
    # Only column j moved: O(n) update of the two rows (exact for all k,
    # including the diagonal and the pair (a, b)).
    rows_new = rows - e + (col[None, :] - col[ab][:, None]) ** 2
    # Nearest-neighbour distances: exact for a and b; for the others a
    # lower bound (exact again once the row is proposed or a chunk starts),
    # which at worst wastes a proposal on a row that is no longer critical.
    near = jnp.minimum(near, jnp.min(rows_new, axis=0))
    near = near.at[ab].set(jnp.min(rows_new, axis=1))
    d2 = d2.at[ab].set(rows_new)
    d2 = d2.at[:, ab].set(rows_new.T)
    return (ct, d2, near, s), None

  def run_chunk(carry, u):
    ct, d2, near, best_m, best_ct = carry
    # The scale s makes the closest pair's term 1: no overflow, and terms
    # that matter do not underflow.
    (ct, d2, _, _), _ = jax.lax.scan(step, (ct, d2, near, jnp.min(near)), u)
    near = jnp.min(d2, axis=1)  # exact again
    m = jnp.min(near)
    best_ct = jnp.where(m > best_m, ct, best_ct)
    return (ct, d2, near, jnp.maximum(m, best_m), best_ct), None

  near = jnp.min(d2, axis=1)
  carry, _ = jax.lax.scan(run_chunk, (ct, d2, near, jnp.min(near), ct), u)
  best_m, best_ct = carry[-2:]
  best = (jnp.round(best_ct.T) + half).astype(jnp.int32)
  return best_m, best


@functools.partial(
    jax.jit,
    static_argnames=(
        'n', 'd', 'num_candidates', 'num_chunks', 'chunk', 'q', 'jitter',
        'dtype',
    ),
)
def _maximin_lhs(key, n, d, num_candidates, num_chunks, chunk, q, jitter,
                 dtype):
  optimizes = d > 1 and n > 2 and num_chunks > 0
  # Nothing to optimize otherwise: for d = 1 every centered LHS is the same
  # point set (gaps 1 / n), and for n = 2 the distance is always sqrt(d) / 2.
  sizes = [n * d, jitter * n * d, optimizes * num_chunks * chunk * 3]
  if num_candidates > 1 and optimizes:
    # Candidates draw their own bits; only the jitter is drawn here.
    key, key_candidates = jax.random.split(key)
    sizes[0] = sizes[2] = 0
  bits = jnp.split(
      jax.random.bits(key, (sum(sizes),), jnp.uint32),
      [sizes[0], sizes[0] + sizes[1]],
  )
  u_jitter = _unit_from_bits(bits[1]).reshape(n, d) if jitter else None
  if not optimizes:
    return _to_unit(_perm_from_bits(bits[0], n, d), u_jitter, dtype)

  def optimize(bits):
    perm = _perm_from_bits(bits[: n * d], n, d)
    u = _unit_from_bits(bits[n * d :]).reshape(num_chunks, chunk, 3)
    return _optimize_one(perm, u, q)

  if num_candidates == 1:
    _, perm = optimize(jnp.concatenate([bits[0], bits[2]]))
  else:
    size = n * d + num_chunks * chunk * 3
    draw = lambda k: jax.random.bits(k, (size,), jnp.uint32)
    keys = jax.random.split(key_candidates, num_candidates)
    m, perms = jax.vmap(lambda k: optimize(draw(k)))(keys)
    perm = perms[jnp.argmax(m)]
  return _to_unit(perm, u_jitter, dtype)


def maximin_lhs(
    key: jax.Array,
    n: int,
    d: int,
    *,
    num_steps: int | None = None,
    num_candidates: int = 1,
    chunk: int = 256,
    q: int | None = None,
    jitter: bool = False,
    dtype=None,
) -> jax.Array:
  """Maximin Latin hypercube: an LHS with a large minimum pairwise distance.

  Args:
    key: PRNG key.
    n: number of points.
    d: dimension.
    num_steps: swap proposals per candidate (default `n // 4` clipped to
      [64, 4096], which costs about as much as a few full pairwise distance
      computations; at n = 25 about 0.1 ms on CPU, the time of pyDOE3's
      best-of-5 maximin); 0 gives a plain centered LHS. More steps keep
      improving the design (e.g. 4096 at n = 1000 takes ~0.1-0.5 s on CPU).
    num_candidates: designs optimized in parallel (vmap); the one with the
      largest minimum distance is returned. For the same time, more steps
      usually beat more candidates, except for small n where the greedy
      search stalls in a local optimum.
    chunk: steps between exact reads of the minimum distance (best-so-far
      bookkeeping); `num_steps` is rounded up to a multiple of it.
    q: exponent on squared distances, in the criterion and the row weights
      (default grows with d, 16 to 64); larger focuses on the closest pair.
    jitter: move points uniformly inside their strata after optimizing.
      False (default) keeps the centered lattice `(i + 0.5) / n`, which has
      the larger minimum distance (and is optimal for d = 1). For n = 1
      the points are always jittered: the centered design of one point is
      the cube's center for every key (after `to_normal`, the latent mode
      z = 0 for every target when one sample is drawn per target), while
      any point is a Latin design of size 1; so it is a uniform draw, as
      from `lhs`.
    dtype: float dtype of the result (default: JAX's default float).

  Returns:
    (n, d) points in the open unit cube, one per stratum in every column.

  Raises:
    ValueError: for bad sizes or options, or when the distance matrices
      (`num_candidates` x n x n float32) would exceed 4 GiB.
  """
  n, d = _check_size('n', n), _check_size('d', d)
  if num_steps is None:
    num_steps = min(4096, max(64, n // 4))
  try:
    num_steps = operator.index(num_steps)
  except TypeError:
    raise ValueError(f'num_steps must be an int, got {num_steps!r}') from None
  if num_steps < 0:
    raise ValueError(f'num_steps must be >= 0, got {num_steps}')
  num_candidates = _check_size('num_candidates', num_candidates)
  chunk = min(_check_size('chunk', chunk), max(num_steps, 1))
  q = _check_size('q', _default_q(d) if q is None else q)
  optimizes = num_steps > 0 and d > 1 and n > 2
  if optimizes and num_candidates * n * n * 4 > _MAX_MATRIX_BYTES:
    raise ValueError(
        f'maximin_lhs with n={n} and num_candidates={num_candidates} needs '
        f'{num_candidates * n * n * 4 / 2**30:.1f} GiB for distance '
        f'matrices (limit {_MAX_MATRIX_BYTES / 2**30:.0f} GiB); use fewer '
        'points or candidates, or lhs'
    )
  num_chunks = -(-num_steps // chunk)
  jitter = bool(jitter) or n == 1   # see `jitter` above
  return _maximin_lhs(
      key, n, d, num_candidates, num_chunks, chunk, q, jitter,
      _float_dtype(dtype),
  )


def _default_q(d):
  """Exponent on squared distances: higher in high d, where distances
  concentrate and a low exponent would weigh many near-minimal pairs."""
  return int(min(64, max(16, 8 * math.ceil(math.sqrt(d)))))


# ----------------------------------------------------------------------------
# Latent vectors.


@jax.jit
def to_normal(u: jax.Array) -> jax.Array:
  """Maps points of the unit cube to N(0, I) by the inverse normal CDF.

  Args:
    u: (n, d) points in [0, 1]; clipped into [eps, 1 - eps] (eps the
      machine epsilon of u's dtype) so the result is always finite.

  Returns:
    (n, d) standard-normal coordinates, same float dtype as u.
  """
  u = jnp.asarray(u)
  if not jnp.issubdtype(u.dtype, jnp.floating):
    u = u.astype(jnp.result_type(float))
  eps = jnp.finfo(u.dtype).eps
  return jax.scipy.special.ndtri(jnp.clip(u, eps, 1.0 - eps))


def get_sampler(name: str) -> Sampler:
  """Returns the sampler `(key, n, d, **opts) -> (n, d)` called `name`.

  Args:
    name: one of 'srs', 'lhs', 'maximin_lhs'.
  """
  samplers = {'srs': srs, 'lhs': lhs, 'maximin_lhs': maximin_lhs}
  if name not in samplers:
    raise ValueError(
        f'unknown sampler {name!r}; expected one of {_SAMPLER_NAMES}'
    )
  return samplers[name]


def sample_latent(
    key: jax.Array, n: int, d: int, sampler: str = 'maximin_lhs', **opts
) -> jax.Array:
  """Draws n latent vectors from N(0, I) with a space-filling design.

  Args:
    key: PRNG key.
    n: number of latent vectors.
    d: latent dimension.
    sampler: 'srs', 'lhs' or 'maximin_lhs'.
    **opts: options of the sampler.

  Returns:
    (n, d) standard-normal latent vectors (finite).
  """
  return to_normal(get_sampler(sampler)(key, n, d, **opts))


def sample_latent_per_target(key: jax.Array, num_targets: int, n: int,
                             d: int, sampler: str = 'maximin_lhs'
                             ) -> jax.Array:
  """(num_targets, n, d) latent vectors: one design per target, own subkey."""
  keys = jax.random.split(key, num_targets)
  return jax.vmap(lambda k: sample_latent(k, n, d, sampler))(keys)
