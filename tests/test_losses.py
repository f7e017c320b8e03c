"""Losses against independent numpy implementations and known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import flows
from ipage_jax import losses
from ipage_jax import schedules

WIDTHS = (0.2, 0.5, 0.9, 1.3)


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
  np.testing.assert_allclose(got, _np_mmd(a, b, WIDTHS, unbiased), rtol=1e-4,
                             atol=1e-6)


def test_mmd_small_for_same_distribution_large_for_shift():
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (400, 2))
  b = jax.random.normal(kb, (400, 2))
  same = losses.mmd(a, b, unbiased=True)
  shifted = losses.mmd(a, b + 1.0, unbiased=True)
  assert abs(float(same)) < 0.01
  assert float(shifted) > 0.1
  assert float(shifted) > 20 * abs(float(same))
  np.testing.assert_allclose(losses.mmd(a, a), 0.0, atol=1e-6)


def test_kernel_diagonal_and_validation():
  a = jnp.ones((3, 2))
  np.testing.assert_allclose(jnp.diag(losses.imq_kernel(a, a, WIDTHS)),
                             len(WIDTHS), rtol=1e-6)
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
  np.testing.assert_allclose(
      losses.max_likelihood_loss(y_pred, z, y, log_det, sigma), expected,
      rtol=1e-6)
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
  # First half: only the forward fit counts, with weight N_l = 3.
  np.testing.assert_allclose(loss0, 3.0 * aux0['l_y'], rtol=1e-6)
  # The identity start maps x -> (x1, x2): l_y is the MSE of x1 against y.
  np.testing.assert_allclose(aux0['l_y'], jnp.mean((x[:, :1] - y) ** 2),
                             rtol=1e-5)
  loss1, aux1 = loss_fn(params, x, y, key, 99)
  expected = (aux1['lam_x'] * aux1['l_x'] + aux1['lam_y'] * aux1['l_y']
              + aux1['lam_z'] * aux1['l_z'])
  np.testing.assert_allclose(loss1, expected, rtol=1e-6)
  np.testing.assert_allclose(aux1['lam_x'], 3.0, rtol=1e-6)
  ml = losses.make_inn_objective(inn, weights, objective='ml', ml_sigma=1.0)
  loss_ml0, aux_ml0 = ml(params, x, y, key, 0)
  # First half: the forward fit alone, as for 'mmd'.
  np.testing.assert_allclose(loss_ml0, 3.0 * aux_ml0['l_y'], rtol=1e-6)
  loss_ml, aux_ml = ml(params, x, y, key, 99)
  # Identity start: log_det = 0; NLL = 0.5 (|x1 - y|^2 + x2^2), batch mean.
  expected_ml = jnp.mean(0.5 * ((x[:, 0] - y[:, 0]) ** 2 + x[:, 1] ** 2))
  np.testing.assert_allclose(aux_ml['l_ml'], expected_ml, rtol=1e-5)
  np.testing.assert_allclose(
      loss_ml, aux_ml['lam_y'] * aux_ml['l_y'] + 3.0 * expected_ml, rtol=1e-5)
  with pytest.raises(ValueError, match='objective'):
    losses.make_inn_objective(inn, weights, objective='nope')


def test_conditional_mmd_sees_what_the_marginal_mmd_cannot():
  """Rows of x permuted across y: same marginal sample, wrong conditionals."""
  key_x, key_perm = jax.random.split(jax.random.PRNGKey(3))
  y = jnp.linspace(-2.0, 2.0, 64)[:, None]
  x = y + 0.1 * jax.random.normal(key_x, (64, 1))   # x tracks y
  shuffled = x[jax.random.permutation(key_perm, 64)]
  # Each of the 3 terms is a mean of n^2 kernel values in [0, 4] (4 widths),
  # summed as n products of length n: float32 rounding <= 2 n eps 4 each.
  atol = 3 * 2 * 64 * np.finfo(np.float32).eps * 4
  # The same multiset of rows: the biased marginal MMD is 0 up to rounding.
  np.testing.assert_allclose(losses.mmd(shuffled, x), 0.0, atol=atol)
  w = losses.conditional_weights(y, 0.2)
  assert float(losses.mmd(shuffled, x, weights=w)) > 0.05
  np.testing.assert_allclose(losses.mmd(x, x, weights=w), 0.0, atol=atol)
  # All-ones weights: the plain MMD (the product kernel with a constant).
  np.testing.assert_allclose(
      losses.mmd(shuffled[:10], x[:10], weights=jnp.ones((10, 10))),
      losses.mmd(shuffled[:10], x[:10]), rtol=1e-6)
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
  np.testing.assert_allclose(clean(params, x, y, key, 0)[1]['l_y'], 0.0,
                             atol=1e-6)
  l_y = float(noisy(params, x, y, key, 0)[1]['l_y'])
  assert abs(l_y - sigma**2) < 5 * sigma**2 * np.sqrt(2 / 4096)
