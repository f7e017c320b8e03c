"""Tests for ipage_jax.sampling (references: numpy, scipy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from ipage_jax import sampling

N, D = 50, 3  # shared shape, so most tests reuse one compiled sampler
KEY = jax.random.PRNGKey(0)
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
# float32 ndtri (Cephes): a rational approximation of ~30 roundings feeding
# a correction term of at most about a quarter of z's size, so <= 8 eps
# relative (measured: 3 eps on a dense grid of [eps, 1 - eps]).
NDTRI_ULPS = 8


def _min_dist(x):
  return distance.pdist(np.asarray(x, np.float64)).min()


def _assert_latin(x):
  """Each column has exactly one point in each of the n strata."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  assert np.all(x > 0.0) and np.all(x < 1.0)
  strata = np.floor(x * n).astype(int)
  for j in range(x.shape[1]):
    np.testing.assert_array_equal(np.sort(strata[:, j]), np.arange(n))


@pytest.mark.parametrize(
    'fn',
    [
        lambda k: sampling.lhs(k, N, D),
        lambda k: sampling.lhs(k, N, D, jitter=False),
        lambda k: sampling.maximin_lhs(k, N, D),
    ],
    ids=['lhs', 'lhs_centered', 'maximin'],
)
def test_one_point_per_stratum(fn):
  for seed in range(3):
    x = fn(jax.random.PRNGKey(seed))
    assert x.shape == (N, D) and x.dtype == jnp.float32
    _assert_latin(x)


def test_jitter_stays_inside_strata_at_large_n():
  # n * eps is large here: rounding of (k + u) / n must not cross a stratum
  # edge (k / n) nor reach 0 or 1.
  x = sampling.lhs(KEY, 20000, 2)
  _assert_latin(x)
  # The jitter really is uniform inside the strata (not centered): the
  # offsets x * n - k are ~ U(0, 1); Kolmogorov-Smirnov against U(0, 1)
  # at level 1e-3 (the chance that a correct sampler fails).
  offsets = (np.asarray(x, np.float64) * 20000) % 1.0
  assert stats.kstest(offsets.ravel(), 'uniform').pvalue > 1e-3


def test_centered_points_are_stratum_midpoints():
  for x in (sampling.lhs(KEY, N, D, jitter=False),
            sampling.maximin_lhs(KEY, N, D)):
    # (k + 0.5) / n: k + 0.5 is exact, the division rounds once (or XLA
    # multiplies by a rounded 1 / n: two roundings), <= eps relative.
    want = (np.arange(N) + 0.5) / N
    for j in range(D):
      np.testing.assert_allclose(np.sort(np.asarray(x)[:, j]), want,
                                 rtol=EPS32, atol=0)


@pytest.mark.parametrize('name', ['srs', 'lhs', 'maximin_lhs'])
def test_same_key_same_design(name):
  fn = sampling.get_sampler(name)
  a, b = fn(KEY, N, D), fn(KEY, N, D)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = fn(jax.random.PRNGKey(1), N, D)
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_maximin_beats_plain_lhs_with_the_same_key():
  for seed in range(4):
    key = jax.random.PRNGKey(seed)
    plain = _min_dist(sampling.lhs(key, N, D, jitter=False))
    opt = _min_dist(sampling.maximin_lhs(key, N, D))
    assert opt > 1.5 * plain


def test_maximin_beats_best_of_many_random_designs():
  # pyDOE3-style "maximin": the best of 200 random centered LHS designs.
  rng = np.random.default_rng(0)
  best = max(
      _min_dist((np.stack([rng.permutation(N) for _ in range(D)], 1) + 0.5)
                / N)
      for _ in range(200)
  )
  for seed in range(3):
    assert _min_dist(sampling.maximin_lhs(jax.random.PRNGKey(seed), N, D)) > (
        1.3 * best)


def test_more_steps_do_not_hurt_and_zero_steps_is_plain_centered_lhs():
  zero = sampling.maximin_lhs(KEY, N, D, num_steps=0)
  _assert_latin(zero)
  assert _min_dist(sampling.maximin_lhs(KEY, N, D)) > _min_dist(zero)


def test_optimizer_bookkeeping_matches_brute_force():
  # The incrementally updated distance matrix must give the true minimum:
  # compare with scipy on the returned integer design.
  rng = np.random.default_rng(1)
  n, d = 40, 4
  start = np.stack([rng.permutation(n) for _ in range(d)], 1)
  u = rng.random((3, 32, 3), dtype=np.float32)
  best_m, perm = jax.jit(sampling._optimize_one, static_argnums=2)(
      jnp.asarray(start, jnp.int32), jnp.asarray(u), 16)
  perm = np.asarray(perm)
  for j in range(d):
    np.testing.assert_array_equal(np.sort(perm[:, j]), np.arange(n))
  sq = lambda p: distance.pdist(p.astype(np.float64), 'sqeuclidean').min()
  assert float(best_m) == sq(perm)
  assert sq(perm) > 2 * sq(start)


def test_multiple_candidates_with_jitter():
  x = sampling.maximin_lhs(KEY, N, D, num_candidates=3, num_steps=64,
                           chunk=32, jitter=True)
  _assert_latin(x)
  # Jittered: not on the stratum centers. For U(0, 1) offsets all N D of
  # them within 0.1 of 0.5 has probability 0.2^(N D) < 1e-100.
  assert np.abs(np.asarray(x) * N % 1.0 - 0.5).max() > 0.1
  assert _min_dist(x) > 1.5 * _min_dist(sampling.lhs(KEY, N, D,
                                                     jitter=False))


def test_one_dimension_is_the_centered_grid():
  x = np.asarray(sampling.maximin_lhs(KEY, 25, 1))
  # Each point within eps relative of (k + 0.5) / n (see above), so every
  # gap, and the minimum distance, within 2 eps max(x) of 1 / n.
  np.testing.assert_allclose(np.sort(x[:, 0]), (np.arange(25) + 0.5) / 25,
                             rtol=EPS32, atol=0)
  np.testing.assert_allclose(_min_dist(x), 1 / 25, rtol=0,
                             atol=2 * EPS32 * x.max())


@pytest.mark.parametrize('name', ['srs', 'lhs', 'maximin_lhs'])
def test_tiny_sizes(name):
  fn = sampling.get_sampler(name)
  one = np.asarray(fn(KEY, 1, 4))
  assert one.shape == (1, 4) and np.all((one > 0) & (one < 1))
  two = np.asarray(fn(KEY, 2, 3))
  assert two.shape == (2, 3) and np.all((two > 0) & (two < 1))
  if name == 'maximin_lhs':  # n = 2: always sqrt(d) / 2 apart
    # The centers 0.25 and 0.75 are exact in float32 (so is 1 / 2); the
    # float64 distance rounds the sum of squares and the root: 2 eps64.
    np.testing.assert_array_equal(np.sort(two, 0),
                                  [[0.25] * 3, [0.75] * 3])
    np.testing.assert_allclose(_min_dist(two), np.sqrt(3) / 2,
                               rtol=2 * EPS64)


def test_one_point_maximin_lhs_is_a_uniform_draw():
  """n = 1 (one design per target, protocol A): the centered lattice would
  put every key's point at the cube's center, i.e. every target's latent at
  the mode z = 0; the one point is uniform instead."""
  keys = jax.random.split(KEY, 400)
  u = np.asarray(jax.vmap(lambda k: sampling.maximin_lhs(k, 1, 3))(keys))
  assert u.shape == (400, 1, 3)
  for j in range(3):
    assert stats.kstest(u[:, 0, j], 'uniform').pvalue > 1e-3
  # The per-target latent vectors the generative baselines decode.
  z = np.asarray(sampling.sample_latent_per_target(KEY, 400, 1, 2,
                                                   'maximin_lhs'))
  for j in range(2):
    assert stats.kstest(z[:, 0, j], 'norm').pvalue > 1e-3
  # n >= 2 keeps the centered lattice.
  np.testing.assert_array_equal(
      np.sort(np.asarray(sampling.maximin_lhs(KEY, 4, 2)), 0),
      np.repeat(((np.arange(4) + 0.5) / 4)[:, None], 2, 1))


def test_srs_is_uniform_in_the_open_cube():
  x = np.asarray(sampling.srs(KEY, 4000, 2), np.float64)
  assert x.shape == (4000, 2) and np.all(x > 0) and np.all(x < 1)
  for j in range(2):  # level 1e-3, as above
    assert stats.kstest(x[:, j], 'uniform').pvalue > 1e-3


def test_jit():
  fn = lambda k: sampling.maximin_lhs(k, 12, 2, num_steps=32)
  np.testing.assert_array_equal(np.asarray(jax.jit(fn)(KEY)),
                                np.asarray(fn(KEY)))


@pytest.mark.slow
def test_vmap_over_keys():
  fn = lambda k: sampling.maximin_lhs(k, 12, 2, num_steps=32)
  keys = jax.random.split(KEY, 3)
  batched = jax.vmap(fn)(keys)
  for i in range(3):
    np.testing.assert_array_equal(np.asarray(batched[i]),
                                  np.asarray(fn(keys[i])))


def test_new_keys_do_not_recompile():
  sampling.maximin_lhs(KEY, N, D)
  before = sampling._maximin_lhs._cache_size()
  for seed in range(3):
    sampling.maximin_lhs(jax.random.PRNGKey(seed + 7), N, D)
  assert sampling._maximin_lhs._cache_size() == before


def test_to_normal_matches_scipy_and_stays_finite():
  u = jnp.array([[0.0, 1e-9, 0.025], [0.5, 0.975, 1.0]], jnp.float32)
  z = np.asarray(sampling.to_normal(u))
  assert z.shape == (2, 3) and z.dtype == np.float32
  assert np.all(np.isfinite(z))
  # Reference at the float32 inputs (0.5 is exact; 1 - 0.975 is exact by
  # Sterbenz, so both tails see the same input): ndtri's own error only.
  u64 = np.asarray(u, np.float64)
  np.testing.assert_allclose(
      z[[0, 1, 1], [2, 0, 1]], stats.norm.ppf(u64[[0, 1, 1], [2, 0, 1]]),
      rtol=NDTRI_ULPS * EPS32, atol=0)
  np.testing.assert_array_equal(z[1, 0], 0.0)  # y - 0.5 = 0 exactly
  # Clipped to eps = 2^-23 and 1 - eps (both exact in float32).
  eps = EPS32
  tail = stats.norm.ppf(eps)
  np.testing.assert_allclose(z[0, 0], tail, rtol=NDTRI_ULPS * eps)
  np.testing.assert_allclose(z[1, 2], -tail, rtol=NDTRI_ULPS * eps)
  np.testing.assert_allclose(z[0, 1], tail, rtol=NDTRI_ULPS * eps)


def test_sample_latent_has_normal_quantiles_per_column():
  # A centered LHS mapped by the inverse CDF: every column holds exactly the
  # n normal quantiles at (i + 0.5) / n.
  z = np.asarray(sampling.sample_latent(KEY, N, D))
  assert z.shape == (N, D) and np.all(np.isfinite(z))
  # The float32 u = (i + 0.5) / n is within eps u of its value (see
  # test_centered_points_are_stratum_midpoints), which moves z by
  # eps u / phi(z); ndtri adds its own NDTRI_ULPS eps |z|.
  u = (np.arange(N) + 0.5) / N
  want = stats.norm.ppf(u)
  tol = EPS32 * (u / stats.norm.pdf(want) + NDTRI_ULPS * np.abs(want))
  for j in range(D):
    assert np.all(np.abs(np.sort(z[:, j]) - want) <= tol)
  # SRS points are exact float32 inputs: ndtri's own error only (clipped
  # into [eps, 1 - eps] like to_normal).
  z_srs = np.asarray(sampling.sample_latent(KEY, N, D, sampler='srs'))
  u_srs = np.clip(np.asarray(sampling.srs(KEY, N, D), np.float64), EPS32,
                  1 - EPS32)
  np.testing.assert_allclose(z_srs, stats.norm.ppf(u_srs),
                             rtol=NDTRI_ULPS * EPS32, atol=0)


def test_get_sampler():
  assert sampling.get_sampler('srs') is sampling.srs
  assert sampling.get_sampler('lhs') is sampling.lhs
  assert sampling.get_sampler('maximin_lhs') is sampling.maximin_lhs
  with pytest.raises(ValueError, match='sobol'):
    sampling.get_sampler('sobol')
  with pytest.raises(ValueError, match='sobol'):
    sampling.sample_latent(KEY, 4, 2, sampler='sobol')


@pytest.mark.parametrize('name', ['srs', 'lhs', 'maximin_lhs'])
@pytest.mark.parametrize(
    'n, d, match',
    [(0, 2, 'n must be >= 1, got 0'), (5, 0, 'd must be >= 1, got 0'),
     (-3, 2, 'got -3'), (2.5, 2, 'n must be an int, got 2.5'),
     (4, '2', "d must be an int, got '2'")],
)
def test_bad_sizes_raise(name, n, d, match):
  with pytest.raises(ValueError, match=match):
    sampling.get_sampler(name)(KEY, n, d)


def test_bad_options_raise():
  with pytest.raises(ValueError, match='num_steps must be >= 0, got -1'):
    sampling.maximin_lhs(KEY, 10, 2, num_steps=-1)
  with pytest.raises(ValueError, match='num_candidates must be >= 1'):
    sampling.maximin_lhs(KEY, 10, 2, num_candidates=0)
  with pytest.raises(ValueError, match='q must be >= 1'):
    sampling.maximin_lhs(KEY, 10, 2, q=0)
  with pytest.raises(ValueError, match='int32'):
    sampling.lhs(KEY, 10, 2, dtype=jnp.int32)
  # Refused before anything is allocated: 40000^2 float32 is 6 GiB.
  with pytest.raises(ValueError, match='n=40000'):
    sampling.maximin_lhs(KEY, 40000, 2)
