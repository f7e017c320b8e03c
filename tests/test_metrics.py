"""Tests for the evaluation metrics on hand-made inputs."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance

from ipage_jax import metrics

EPS32 = float(np.finfo(np.float32).eps)


def _linear_sim(x):
  """(n, 2) -> (n, 2): y = (x1 + x2, 2 x1)."""
  return jnp.stack([x[:, 0] + x[:, 1], 2.0 * x[:, 0]], axis=-1)


def _nan_sim(x):
  """(n, 1) -> (n, 1): sqrt(x), NaN for negative x."""
  return jnp.sqrt(x)


# --------------------------------------------------------- re-simulation


def test_resimulation_error_by_hand():
  x = jnp.array([[1.0, 2.0], [0.0, 0.0], [0.5, -0.5]])
  target = jnp.array([3.0, 1.0])
  res = metrics.resimulation_error(_linear_sim, x, target)
  # y = (3, 2), (0, 0), (0, 1): errors 0 + 1, 9 + 1, 9 + 0, all exact in
  # float32 (small integers and halves); the mean 20 / 3 rounds once.
  np.testing.assert_array_equal(res.per_sample, [1.0, 10.0, 9.0])
  np.testing.assert_allclose(res.mean, 20.0 / 3.0, rtol=EPS32 / 2)
  assert int(res.num_invalid) == 0


def test_resimulation_error_skips_and_counts_invalid_rows():
  x = jnp.array([[4.0], [-1.0], [9.0], [jnp.nan]])
  res = metrics.resimulation_error(_nan_sim, x, jnp.array([1.0]))
  per = np.asarray(res.per_sample)
  # sqrt of perfect squares and the small integers after it are exact.
  np.testing.assert_array_equal(per[[0, 2]], [1.0, 4.0])
  assert np.all(np.isnan(per[[1, 3]]))
  np.testing.assert_array_equal(res.mean, 2.5)
  assert int(res.num_invalid) == 2
  # All rows invalid: mean is NaN, not 0.
  res = metrics.resimulation_error(
      _nan_sim, jnp.array([[-1.0], [-2.0]]), jnp.array([0.0])
  )
  assert np.isnan(float(res.mean)) and int(res.num_invalid) == 2


def test_resimulation_error_jits():
  x = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  fn = jax.jit(functools.partial(metrics.resimulation_error, _linear_sim))
  res = fn(x, jnp.array([3.0, 1.0]))
  np.testing.assert_array_equal(res.per_sample, [1.0, 10.0])  # exact
  np.testing.assert_array_equal(res.mean, 5.5)


def test_protocols():
  x = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  # A: one target per row.
  targets = jnp.array([[3.0, 2.0], [1.0, -1.0]])
  # Small integers throughout: exact.
  res_a = metrics.protocol_a_error(_linear_sim, x, targets)
  np.testing.assert_array_equal(res_a.per_sample, [0.0, 2.0])
  np.testing.assert_array_equal(res_a.mean, 1.0)
  # B: one target for all rows.
  res_b = metrics.protocol_b_error(_linear_sim, x, jnp.array([1.0, -1.0]))
  np.testing.assert_array_equal(res_b.per_sample, [4.0 + 9.0, 2.0])
  np.testing.assert_array_equal(res_b.mean, 7.5)


def test_bad_shapes_raise():
  x = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match='y_target'):
    metrics.resimulation_error(_linear_sim, x, jnp.zeros(3))
  with pytest.raises(ValueError, match='x must'):
    metrics.resimulation_error(_linear_sim, jnp.zeros(2), jnp.zeros(2))
  with pytest.raises(ValueError, match='protocol A'):
    metrics.protocol_a_error(_linear_sim, x, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match='protocol B'):
    metrics.protocol_b_error(_linear_sim, x, jnp.zeros((3, 2)))


# ---------------------------------------------------------- mode coverage


def test_mode_coverage_by_hand():
  modes = jnp.array([0, 0, 1, 2, 2, 2, 3, 3, -1])
  err = jnp.array([0.01, 0.02, 0.2, 0.0, 0.04, -0.03, jnp.nan, 0.06, 0.0])
  cov = metrics.mode_coverage(modes, err, num_modes=5, tol=0.05)
  # Accurate: modes 0 (2), 2 (3); mode 1 and 3 only have inaccurate or NaN
  # rows, mode 4 none, index -1 belongs to no mode.
  np.testing.assert_array_equal(cov.counts, [2, 0, 3, 0, 0])
  assert int(cov.num_covered) == 2
  np.testing.assert_array_equal(cov.smallest_share, 0.0)
  cov = metrics.mode_coverage(modes, err, num_modes=3, tol=0.05)
  np.testing.assert_array_equal(cov.counts, [2, 0, 3])
  cov = metrics.mode_coverage(
      jnp.array([0, 1, 1, 2, 2, 2]), jnp.zeros((6, 1)), num_modes=3
  )
  assert int(cov.num_covered) == 3
  # 1 / 6 of integer counts: one rounding.
  np.testing.assert_allclose(cov.smallest_share, 1.0 / 6.0, rtol=EPS32 / 2)


def test_mode_coverage_multi_output_uses_largest_error():
  err = jnp.array([[0.01, 0.2], [0.01, 0.01]])
  cov = metrics.mode_coverage(jnp.array([0, 1]), err, num_modes=2)
  np.testing.assert_array_equal(cov.counts, [0, 1])


def test_mode_coverage_nothing_accurate():
  cov = metrics.mode_coverage(jnp.array([0, 1]), jnp.ones(2), num_modes=2)
  assert int(cov.num_covered) == 0
  np.testing.assert_array_equal(cov.smallest_share, 0.0)
  with pytest.raises(ValueError, match='num_modes'):
    metrics.mode_coverage(jnp.array([0]), jnp.zeros(1), num_modes=0)
  with pytest.raises(ValueError, match='tol'):
    metrics.mode_coverage(jnp.array([0]), jnp.zeros(1), 1, tol=0.0)


# -------------------------------------------------------------- diversity


def test_diversity_unit_square_corners():
  x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  # d2 in {0, 1, 2} exactly; float32 sqrt (1 rounding), 3 adds per row sum,
  # 3 over the rows, the division: positive terms, <= 8 eps relative.
  np.testing.assert_allclose(
      metrics.diversity(x), (4.0 + 2.0 * np.sqrt(2.0)) / 6.0, rtol=8 * EPS32
  )


def test_diversity_matches_scipy_with_uneven_blocks():
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (37, 5)))
  ref = distance.pdist(x.astype(np.float64)).mean()
  # Float64 reference on the same float32 rows. Per pair d2 = sum of 5
  # squared differences (2 roundings each and 4 adds: <= 6 eps relative,
  # all terms positive), sqrt halves that and rounds once (4 eps); then
  # the row sum of n = 37 and the sum of 37 rows (36 adds each) and the
  # division: (4 + 2 * 36 + 1) eps relative.
  tol = (4 + 2 * 36 + 1) * EPS32
  np.testing.assert_allclose(
      metrics.diversity(jnp.asarray(x), batch_size=8), ref, rtol=tol
  )
  np.testing.assert_allclose(metrics.diversity(jnp.asarray(x)), ref, rtol=tol)


def test_diversity_gradient_is_finite_and_bad_input_raises():
  x = jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
  g = jax.grad(metrics.diversity)(x)
  assert np.all(np.isfinite(np.asarray(g)))
  with pytest.raises(ValueError, match='n >= 2'):
    metrics.diversity(jnp.zeros((1, 3)))


# -------------------------------------------------------------------- r_T


def test_r_t_prefix_by_hand():
  errors = jnp.array([[3.0, 1.0, 2.0, 0.5], [0.2, 5.0, 0.1, 4.0]])
  r = metrics.r_t_curve(errors, [1, 2, 3, 4])
  # Target 1 running min: 3, 1, 1, 0.5; target 2: 0.2, 0.2, 0.1, 0.1. The
  # minima are exact; the mean of 2 float32 values rounds once (halving is
  # exact): against the float64 mean of the float32 values.
  e = np.asarray(errors, np.float64)
  ref = (np.minimum.accumulate(e, 1)).mean(0)
  np.testing.assert_allclose(r, ref, rtol=EPS32 / 2)
  r1 = metrics.r_t_curve(errors[0], [2])
  np.testing.assert_array_equal(r1, [1.0])


def test_r_t_prefix_skips_invalid():
  errors = jnp.array([jnp.nan, 2.0, jnp.inf, 1.0])
  r = metrics.r_t_curve(errors, [1, 2, 4])
  assert np.isnan(float(r[0]))
  np.testing.assert_array_equal(r[1:], [2.0, 1.0])  # minima: exact


def test_r_t_subset_matches_brute_force():
  e = np.array([[0.7, 0.1, 0.9, 0.3, 0.5, 0.2],
                [1.0, 4.0, 2.0, 8.0, 3.0, 0.5]]).astype(np.float32)
  ts = [1, 2, 3, 5, 6]
  ref = [
      np.mean([
          np.mean([row[list(c)].min()
                   for c in itertools.combinations(range(6), t)])
          for row in e.astype(np.float64)
      ])
      for t in ts
  ]
  r = metrics.r_t_curve(jnp.asarray(e), ts, estimator='subset')
  # Float64 brute force on the float32 errors. The code: weights stored in
  # float32 (1 rounding), n = 6 products (1) summed (5), the mean over 2
  # targets (1, halving exact); positive terms: <= 8 eps relative.
  np.testing.assert_allclose(r, ref, rtol=8 * EPS32)


def test_r_t_subset_with_invalid_entries():
  # One NaN among 4: every 2-subset has a finite value, so r_2 is the mean
  # of the min over the finite ones; r_1 can draw the NaN, so it is NaN.
  e = np.array([0.4, np.nan, 0.1, 0.3]).astype(np.float32)
  ref = np.mean([
      np.nanmin(e.astype(np.float64)[list(c)])
      for c in itertools.combinations(range(4), 2)
  ])
  r = metrics.r_t_curve(jnp.asarray(e), [1, 2], estimator='subset')
  assert np.isnan(float(r[0]))
  # Weights stored (1 rounding), 4 products (1) summed (3): <= 5 eps.
  np.testing.assert_allclose(r[1], ref, rtol=5 * EPS32)


def test_r_t_bad_arguments():
  with pytest.raises(ValueError, match='ts'):
    metrics.r_t_curve(jnp.ones(3), [4])
  with pytest.raises(ValueError, match='ts'):
    metrics.r_t_curve(jnp.ones(3), [0])
  with pytest.raises(ValueError, match='estimator'):
    metrics.r_t_curve(jnp.ones(3), [1], estimator='mean')


# ------------------------------------------------------------------ timing


def test_time_to_solution_and_first_crossing():
  t = metrics.TimeToSolution(inference_s=0.25, localization_s=1.5)
  # 0.25 + 1.5: dyadic float64 values, the sum is exact.
  assert t.total_s == 1.75
  curve = jnp.array([5.0, 3.0, 1.0, 0.5, 0.7])
  assert int(metrics.first_crossing(curve, 1.0)) == 2
  assert int(metrics.first_crossing(curve, 5.0)) == 0
  assert int(metrics.first_crossing(curve, 0.1)) == -1


# ------------------------------------------------------------ calibration


def _linear_gaussian(num_targets, num_samples, scale=1.0, shift=0.0):
  """x ~ N(0, I_2), y = a.x + N(0, s^2): the exact posterior is Gaussian.

  Posterior covariance S = (I + a a^T / s^2)^-1 and mean S a y / s^2
  (conjugate Gaussian, closed form). `scale` / `shift` distort the samples
  (scale < 1: over-confident; shift: biased) to show the checks can fail.
  """
  rng = np.random.default_rng(0)
  a, s = np.array([1.0, 0.5]), 0.3
  cov = np.linalg.inv(np.eye(2) + np.outer(a, a) / s**2)
  x = rng.normal(size=(num_targets, 2))
  y = x @ a + s * rng.normal(size=num_targets)
  mean = (y[:, None] * (cov @ a)[None]) / s**2
  chol = np.linalg.cholesky(cov)
  eps = rng.normal(size=(num_targets, num_samples, 2))
  samples = mean[:, None] + shift + scale * eps @ chol.T
  return x.astype(np.float32), samples.astype(np.float32)


def test_calibration_of_the_exact_linear_gaussian_posterior():
  num_targets = 400
  x, samples = _linear_gaussian(num_targets, 99)
  cal = metrics.calibration(x, samples, num_bins=10)
  assert cal.ranks.shape == (num_targets, 2)
  assert int(cal.ranks.min()) >= 0 and int(cal.ranks.max()) <= 99
  # A uniform-rank p-value below 1e-3 happens once in 1000 exact runs.
  assert np.all(np.asarray(cal.rank_p_value) > 1e-3)
  levels = np.asarray(cal.levels)[:, None]
  # Coverage is a binomial share: 4 standard deviations sqrt(a(1-a)/T).
  tol = 4 * np.sqrt(levels * (1 - levels) / num_targets)
  assert np.all(np.abs(np.asarray(cal.central_coverage) - levels) <= tol)
  # HPD regions from a kernel density of L = 99 samples: the same binomial
  # noise. The smoothing adds no bias here: the estimate's mean is the fixed
  # function p * N(0, H) and ranking the truth among samples of the same
  # law by any fixed score gives a uniform credibility. Left: the grid k / L
  # of the credibility (<= 1 / (L + 1)) and the truth's density averaging L
  # kernels where each sample's leave-one-out one averages L - 1 (one term
  # of weight 1 / L): 2 / L in all (0.02; 0.05 before).
  num_samples = samples.shape[1]
  assert np.all(np.abs(np.asarray(cal.hpd_coverage) - levels[:, 0])
                <= tol[:, 0] + 2 / num_samples)


@pytest.mark.parametrize('scale,shift', [(0.5, 0.0), (1.0, 1.0)])
def test_calibration_flags_overconfident_and_biased_posteriors(scale, shift):
  x, samples = _linear_gaussian(400, 99, scale=scale, shift=shift)
  cal = metrics.calibration(x, samples)
  assert np.all(np.asarray(cal.rank_p_value) < 1e-6)
  at_90 = list(np.round(np.asarray(cal.levels), 2)).index(0.9)
  assert np.all(np.asarray(cal.central_coverage)[at_90] < 0.8)
  assert float(cal.hpd_coverage[at_90]) < 0.8


def test_sbc_ranks_and_rank_uniformity_by_hand():
  x = jnp.array([[0.5, 3.0]])
  samples = jnp.array([[[0.0, 1.0], [1.0, 2.0], [0.2, 4.0]]])
  np.testing.assert_array_equal(metrics.sbc_ranks(x, samples), [[2, 2]])
  # Ranks 0..3 once each, 4 bins: the histogram is flat, chi2 = 0, p = 1.
  chi2, p = metrics.rank_uniformity(np.arange(4)[:, None], 3, 4)
  np.testing.assert_array_equal(chi2, [0.0])  # counts equal expected: exact
  np.testing.assert_array_equal(p, [1.0])  # gammaincc(a, 0) = 1


def test_calibration_rejects_bad_shapes_and_values():
  with pytest.raises(ValueError, match='samples'):
    metrics.calibration(jnp.zeros((3, 2)), jnp.zeros((3, 5, 1)))
  with pytest.raises(ValueError, match='finite'):
    metrics.calibration(jnp.full((3, 1), jnp.nan), jnp.zeros((3, 5, 1)))
  with pytest.raises(ValueError, match='levels'):
    metrics.calibration(jnp.zeros((3, 1)), jnp.zeros((3, 5, 1)),
                        levels=(0.5, 1.0))


def test_rejection_posterior_matches_the_closed_form_posterior():
  """x ~ N(0, 1), y = x: p(x | |y - t| < tol) is N(0, 1) cut to t +- tol."""
  prior = lambda key, n: jax.random.normal(key, (n, 1))
  targets = np.array([[0.0], [1.5]], np.float32)
  tol = 0.1
  s = metrics.rejection_posterior(jax.random.PRNGKey(0), prior, lambda x: x,
                                  targets, 2000, tol, pool_size=100_000)
  assert s.shape == (2, 2000, 1)
  assert np.all(np.abs(s - targets[:, None, :]) < tol)
  # Truncated normal on [t - tol, t + tol] (scipy, independent).
  from scipy import stats
  for t, got in zip(targets[:, 0], s[:, :, 0]):
    ref = stats.truncnorm(t - tol, t + tol, loc=0.0, scale=1.0)
    # Sample mean of 2000 draws: 5 standard errors.
    assert abs(got.mean() - ref.mean()) < 5 * ref.std() / np.sqrt(2000)
  with pytest.raises(ValueError, match='rejection sampling found only'):
    metrics.rejection_posterior(jax.random.PRNGKey(0), prior, lambda x: x,
                                np.array([[9.0]]), 5, 1e-3, pool_size=1000,
                                max_rounds=2)
