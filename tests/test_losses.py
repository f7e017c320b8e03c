"""Losses against independent numpy implementations and known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from ipage_jax import flows
from ipage_jax import losses
from ipage_jax import schedules

WIDTHS = (0.2, 0.5, 0.9, 1.3)
EPS32 = float(np.finfo(np.float32).eps)


def _np_kernel(p, q, widths=WIDTHS):
  """(n, m) IMQ kernel matrix in float64, by direct differences."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  d2 = np.sum((p[:, None] - q[None]) ** 2, -1)
  return sum(h * h / (h * h + d2) for h in widths)


def _mmd_round_off(a, b, widths, unbiased):
  """Float32 error bound of `losses.mmd` on (a, b), evaluated on the data.

  The code forms d2 = |p|^2 + |q|^2 - 2 p.q: each term is off by (d + 2)
  eps (|p|^2 + |q|^2) at most, which moves h^2 / (h^2 + d2) by that times
  h^2 / (h^2 + d2)^2 (its slope in d2); the add and divide round the term
  by 3 eps more. The three kernel sums (matrix-vector form, n m entries of
  size <= len(widths)) add 2 (n + m) eps len(widths) each.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  d = a.shape[1]

  def entry_error(p, q):
    s = np.sum(p * p, -1)[:, None] + np.sum(q * q, -1)[None]
    d2 = np.maximum(s - 2 * p @ q.T, 0.0)
    return sum(h * h * (d + 2) * EPS32 * s / (h * h + d2) ** 2
               + 3 * EPS32 * h * h / (h * h + d2) for h in widths)

  n, m = len(a), len(b)
  e_aa, e_bb, e_ab = entry_error(a, a), entry_error(b, b), entry_error(a, b)
  sums = 3 * 2 * (n + m) * EPS32 * len(widths)
  if unbiased:
    return (e_aa.sum() / (n * (n - 1)) + e_bb.sum() / (m * (m - 1))
            + 2 * e_ab.mean() + sums)
  return e_aa.mean() + e_bb.mean() + 2 * e_ab.mean() + sums


def _mmd_standard_error(a, b, null):
  """Standard error of the unbiased MMD^2 of paired samples (n rows each),
  a U-statistic of h_ij = k(a_i, a_j) + k(b_i, b_j) - k(a_i, b_j) -
  k(a_j, b_i): Var = 4 (n - 2) / (n (n - 1)) zeta_1 + 2 / (n (n - 1))
  zeta_2 (Hoeffding), with zeta_1 = Var_i E_j h_ij, which is 0 under the
  null (the statistic is degenerate), and zeta_2 = E h_ij^2 there."""
  n = len(a)
  k_ab = _np_kernel(a, b)
  h = _np_kernel(a, a) + _np_kernel(b, b) - k_ab - k_ab.T
  off = ~np.eye(n, dtype=bool)
  zeta_2 = np.mean(h[off] ** 2) if null else np.var(h[off])
  zeta_1 = 0.0 if null else np.var(np.where(off, h, 0.0).sum(1) / (n - 1))
  return np.sqrt(4 * (n - 2) / (n * (n - 1)) * zeta_1
                 + 2 / (n * (n - 1)) * zeta_2)


def _population_mmd(shift, widths=WIDTHS):
  """MMD^2 of N(0, I_2) against N(shift, I_2) with the IMQ kernel: 2 (E k(d0)
  - E k(d1)), d0 ~ N(0, 2 I), d1 ~ N(shift, 2 I); |d|^2 / 2 is chi-square
  with 2 degrees of freedom (noncentral, |shift|^2 / 2, for d1)."""
  def mean_kernel(dist):
    return sum(integrate.quad(lambda t: h * h / (h * h + 2 * t)
                              * dist.pdf(t), 0, np.inf)[0] for h in widths)
  lam = float(np.sum(np.square(shift))) / 2
  return 2 * (mean_kernel(stats.chi2(2)) - mean_kernel(stats.ncx2(2, lam)))


def _kernel_sums_tol(n, widths=WIDTHS):
  """Round-off of an MMD whose three terms are means of n^2 kernel values in
  [0, len(widths)], each summed as n products of length n: <= 2 n eps
  len(widths) per term."""
  return 3 * 2 * n * EPS32 * len(widths)


def _np_mmd(a, b, widths, unbiased):
  """Direct double-loop MMD^2 with the IMQ kernel sum_h h^2/(h^2+|a-b|^2)."""
  def k(p, q):
    d2 = float(np.sum((p - q) ** 2))
    return sum(h * h / (h * h + d2) for h in widths)
  n, m = len(a), len(b)
  kaa = [[k(a[i], a[j]) for j in range(n)] for i in range(n)]
  kbb = [[k(b[i], b[j]) for j in range(m)] for i in range(m)]
  kab = np.mean([[k(a[i], b[j]) for j in range(m)] for i in range(n)])
  if unbiased:
    waa = sum(kaa[i][j] for i in range(n) for j in range(n) if i != j)
    wbb = sum(kbb[i][j] for i in range(m) for j in range(m) if i != j)
    return waa / (n * (n - 1)) + wbb / (m * (m - 1)) - 2 * kab
  return np.mean(kaa) + np.mean(kbb) - 2 * kab


@pytest.mark.parametrize('unbiased', [False, True])
def test_mmd_matches_numpy_reference(unbiased):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(7, 3)).astype(np.float32)
  b = (rng.normal(size=(9, 3)) + 0.5).astype(np.float32)
  got = losses.mmd(jnp.asarray(a), jnp.asarray(b), WIDTHS, unbiased=unbiased)
  # The reference is float64 on the same float32 inputs: only the code's
  # float32 round-off differs (~600 eps here, dominated by the near-zero
  # distances d2 of the within-sample diagonals).
  np.testing.assert_allclose(got, _np_mmd(a, b, WIDTHS, unbiased), rtol=0,
                             atol=_mmd_round_off(a, b, WIDTHS, unbiased))


def test_mmd_small_for_same_distribution_large_for_shift():
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (400, 2))
  b = jax.random.normal(kb, (400, 2))
  same = float(losses.mmd(a, b, unbiased=True))
  shifted = float(losses.mmd(a, b + 1.0, unbiased=True))
  # MC: the unbiased estimate is within 4 standard errors of the population
  # MMD^2, 0 for the same distribution, the closed form for the shift.
  assert abs(same) < 4 * _mmd_standard_error(a, b, null=True)
  population = _population_mmd([1.0, 1.0])  # ~0.41
  se = _mmd_standard_error(a, b + 1.0, null=False)  # ~0.04
  assert abs(shifted - population) < 4 * se
  np.testing.assert_allclose(losses.mmd(a, a), 0.0, rtol=0,
                             atol=_kernel_sums_tol(400))


def test_kernel_diagonal_and_validation():
  a = jnp.ones((3, 2))
  # d2 = 2 + 2 - 2 * 2 = 0 and h^2 / h^2 = 1 are exact in float32.
  np.testing.assert_array_equal(jnp.diag(losses.imq_kernel(a, a, WIDTHS)),
                                len(WIDTHS))
  with pytest.raises(ValueError, match='widths'):
    losses.imq_kernel(a, a, (0.0,))
  with pytest.raises(ValueError, match=r'\(n, d\)'):
    losses.imq_kernel(a, jnp.ones((3, 3)))


def test_max_likelihood_loss_closed_form():
  y_pred = jnp.array([[1.0], [2.0]])
  y = jnp.array([[0.0], [2.5]])
  z = jnp.array([[1.0, 2.0], [0.0, -1.0]])
  log_det = jnp.array([0.3, -0.1])
  sigma = 0.5
  expected = np.mean([0.5 * (1.0 / 0.25 + 5.0) - 0.3,
                      0.5 * (0.25 / 0.25 + 1.0) + 0.1])
  # Float32: the log-dets' representation, 3 roundings per row (squares,
  # sums, the subtraction; / 0.25 and * 0.5 are exact) and the mean of 2:
  # <= 4 eps relative (all terms positive).
  np.testing.assert_allclose(
      losses.max_likelihood_loss(y_pred, z, y, log_det, sigma), expected,
      rtol=4 * EPS32)
  with pytest.raises(ValueError, match='sigma'):
    losses.max_likelihood_loss(y_pred, z, y, log_det, 0.0)


def test_latent_loss_stops_gradient_to_y():
  y_pred = jnp.array([[0.5], [1.0], [-0.3]])
  z_pred = jnp.array([[0.1], [0.2], [0.3]])
  y, z = jnp.zeros((3, 1)), jnp.ones((3, 1))
  g_y = jax.grad(lambda a: losses.latent_loss(a, z_pred, y, z))(y_pred)
  g_z = jax.grad(lambda a: losses.latent_loss(y_pred, a, y, z))(z_pred)
  np.testing.assert_array_equal(g_y, 0.0)
  assert float(jnp.abs(g_z).sum()) > 0


def test_inn_objective_terms_and_weights():
  inn = flows.INN(x_dim=2, y_dim=1, z_dim=1, num_blocks=1, hidden=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  y = jnp.sum(x, -1, keepdims=True)
  params = inn.init(jax.random.PRNGKey(1), x)
  weights = schedules.bidirectional_weights(100, peak=3.0)
  loss_fn = losses.make_inn_objective(inn, weights)
  key = jax.random.PRNGKey(2)
  loss0, aux0 = loss_fn(params, x, y, key, 0)
  # First half: only the forward fit counts, with weight N_l = 3 (exact at
  # step 0); the other terms are exactly 0: one rounding of the product.
  np.testing.assert_allclose(loss0, 3.0 * aux0['l_y'], rtol=EPS32)
  # The identity start maps x -> (x1, x2): l_y is the MSE of x1 against y.
  # Float64 reference; float32: 2 roundings per term and a sum of 16
  # positive terms, <= (16 + 2) eps relative.
  x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  np.testing.assert_allclose(aux0['l_y'], np.mean((x64[:, :1] - y64) ** 2),
                             rtol=18 * EPS32)
  loss1, aux1 = loss_fn(params, x, y, key, 99)
  expected = (aux1['lam_x'] * aux1['l_x'] + aux1['lam_y'] * aux1['l_y']
              + aux1['lam_z'] * aux1['l_z'])
  # The same three positive products plus exact zeros, summed in another
  # order: <= 4 roundings relative.
  np.testing.assert_allclose(loss1, expected, rtol=4 * EPS32)
  # The ramp's fraction is exactly 1 at the last step: 0 + 3 * 1.
  np.testing.assert_allclose(aux1['lam_x'], 3.0, rtol=EPS32)
  ml = losses.make_inn_objective(inn, weights, objective='ml', ml_sigma=1.0)
  loss_ml0, aux_ml0 = ml(params, x, y, key, 0)
  # First half: the forward fit alone, as for 'mmd'.
  np.testing.assert_allclose(loss_ml0, 3.0 * aux_ml0['l_y'], rtol=EPS32)
  loss_ml, aux_ml = ml(params, x, y, key, 99)
  # Identity start: log_det = 0; NLL = 0.5 (|x1 - y|^2 + x2^2), batch mean
  # (float64 reference). Float32: ~6 roundings per row, a sum of 16
  # positive terms: <= 22 eps relative, one more for the weight.
  expected_ml = np.mean(0.5 * ((x64[:, 0] - y64[:, 0]) ** 2
                               + x64[:, 1] ** 2))
  np.testing.assert_allclose(aux_ml['l_ml'], expected_ml, rtol=22 * EPS32)
  np.testing.assert_allclose(
      loss_ml, float(aux_ml['lam_y'] * aux_ml['l_y']) + 3.0 * expected_ml,
      rtol=23 * EPS32)
  with pytest.raises(ValueError, match='objective'):
    losses.make_inn_objective(inn, weights, objective='nope')


def test_conditional_mmd_sees_what_the_marginal_mmd_cannot():
  """Rows of x permuted across y: same marginal sample, wrong conditionals."""
  key_x, key_perm = jax.random.split(jax.random.PRNGKey(3))
  y = jnp.linspace(-2.0, 2.0, 64)[:, None]
  x = y + 0.1 * jax.random.normal(key_x, (64, 1))   # x tracks y
  shuffled = x[jax.random.permutation(key_perm, 64)]
  atol = _kernel_sums_tol(64)
  # The same multiset of rows: the biased marginal MMD is 0 up to rounding.
  np.testing.assert_allclose(losses.mmd(shuffled, x), 0.0, atol=atol)
  w = losses.conditional_weights(y, 0.2)
  # Not a tolerance: the weighted MMD of wrong conditionals is O(0.1),
  # ~300 times its round-off (atol above, ~2e-4).
  assert float(losses.mmd(shuffled, x, weights=w)) > 0.05
  np.testing.assert_allclose(losses.mmd(x, x, weights=w), 0.0, atol=atol)
  # All-ones weights: the plain MMD (the product kernel with a constant);
  # multiplying by 1 is exact and the sums are the same operations.
  np.testing.assert_array_equal(
      losses.mmd(shuffled[:10], x[:10], weights=jnp.ones((10, 10))),
      losses.mmd(shuffled[:10], x[:10]))
  with pytest.raises(ValueError, match='weights'):
    losses.mmd(x, x[:10], weights=w)


def test_x_noise_dequantizes_the_training_designs():
  """Identity start: f_y(x) = x1, so with y = x1 the fit loss is the noise's
  variance: E (sigma eps)^2 = sigma^2 (chi-square, 5 standard errors)."""
  inn = flows.INN(x_dim=2, y_dim=1, z_dim=1, num_blocks=1, hidden=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (4096, 2))
  y = x[:, :1]
  params = inn.init(jax.random.PRNGKey(1), x)
  weights = schedules.bidirectional_weights(100)
  sigma = 0.3
  clean = losses.make_inn_objective(inn, weights)
  noisy = losses.make_inn_objective(inn, weights, x_noise=sigma)
  key = jax.random.PRNGKey(2)
  # Without noise f_y(x) = x1 = y exactly: the loss is exactly 0.
  np.testing.assert_array_equal(clean(params, x, y, key, 0)[1]['l_y'], 0.0)
  l_y = float(noisy(params, x, y, key, 0)[1]['l_y'])
  assert abs(l_y - sigma**2) < 5 * sigma**2 * np.sqrt(2 / 4096)
