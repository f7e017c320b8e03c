"""Invertible blocks: exact inverses, log-determinants, shapes, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import flows

KEY = jax.random.PRNGKey(0)


def _randomize(params, key, scale=0.3):
  """Replaces every parameter by random values (away from the identity)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      scale * jax.random.normal(k, leaf.shape, leaf.dtype)
      for k, leaf in zip(keys, leaves)])


def _block(kind, dim, cond_dim=0):
  common = dict(dim=dim, hidden=16, depth=3, cond_dim=cond_dim)
  if kind == 'glow':
    return flows.GlowCoupling(clamp=2.0, **common)
  if kind == 'realnvp':
    return flows.AffineCoupling(clamp=2.0, **common)
  if kind == 'spline':
    return flows.SplineCoupling(num_bins=6, bound=3.0, **common)
  if kind == 'permutation':
    return flows.Permutation(dim, seed=3)
  if kind == 'actnorm':
    return flows.ActNorm(dim)
  raise ValueError(kind)


def _setup(module, dim, n=6, cond_dim=0, seed=0):
  k_x, k_c, k_p, k_r = jax.random.split(jax.random.PRNGKey(seed), 4)
  v = jax.random.normal(k_x, (n, dim))
  cond = jax.random.normal(k_c, (n, cond_dim)) if cond_dim else None
  params = module.init(k_p, v, cond)
  return v, cond, _randomize(params, k_r)


def _exact_log_det(module, params, v_row, cond_row, method=None):
  """log|det J| of one row from the dense Jacobian (independent of the code's
  own log-det bookkeeping)."""
  def f(a):
    c = None if cond_row is None else cond_row[None]
    return module.apply(params, a[None], c, method=method)[0][0]
  return jnp.linalg.slogdet(jax.jacfwd(f)(v_row))[1]


KINDS = ['glow', 'realnvp', 'spline', 'permutation', 'actnorm']


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('dim', [2, 3, 4, 7])
def test_block_inverse_and_log_det(kind, dim):
  module = _block(kind, dim)
  v, cond, params = _setup(module, dim)
  out, log_det = module.apply(params, v, cond)
  back, log_det_inv = module.apply(params, out, cond, method='inverse')
  chex.assert_shape([out, back, log_det, log_det_inv],
                    [(6, dim), (6, dim), (6,), (6,)])
  np.testing.assert_allclose(back, v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=1e-5, atol=1e-5)
  for i in (0, 3):
    ref = _exact_log_det(module, params, v[i], None)
    np.testing.assert_allclose(log_det[i], ref, rtol=1e-4, atol=1e-4)
    ref_inv = _exact_log_det(module, params, out[i], None, method='inverse')
    np.testing.assert_allclose(log_det_inv[i], ref_inv, rtol=1e-4, atol=1e-4)
  if kind not in ('permutation',):
    # Random parameters really move the points (the checks above are not
    # trivially passed by an identity map).
    assert float(jnp.max(jnp.abs(out - v))) > 1e-2


@pytest.mark.parametrize('kind', ['glow', 'realnvp', 'spline'])
def test_conditional_coupling(kind):
  module = _block(kind, 4, cond_dim=2)
  v, cond, params = _setup(module, 4, cond_dim=2)
  out, log_det = module.apply(params, v, cond)
  back, _ = module.apply(params, out, cond, method='inverse')
  np.testing.assert_allclose(back, v, rtol=1e-5, atol=1e-5)
  ref = _exact_log_det(module, params, v[1], cond[1])
  np.testing.assert_allclose(log_det[1], ref, rtol=1e-4, atol=1e-4)
  # The condition changes the map.
  out_other, _ = module.apply(params, v, cond + 1.0)
  assert float(jnp.max(jnp.abs(out_other - out))) > 1e-3


@pytest.mark.parametrize('coupling', flows.COUPLINGS)
def test_deep_inn_round_trip_and_log_det(coupling):
  inn = flows.INN(x_dim=5, y_dim=2, z_dim=3, num_blocks=8, hidden=16,
                  coupling=coupling, actnorm=True, activation='leaky_relu')
  v, _, params = _setup(inn, inn.width, n=5, seed=1)
  params = _randomize(params, jax.random.PRNGKey(7), scale=0.15)
  out, log_det = inn.apply(params, v)
  back, log_det_inv = inn.apply(params, out, method='inverse')
  np.testing.assert_allclose(back, v, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=1e-4, atol=1e-4)
  ref = _exact_log_det(inn, params, v[2], None)
  np.testing.assert_allclose(log_det[2], ref, rtol=1e-4, atol=1e-4)


def test_inn_starts_as_a_permutation():
  inn = flows.INN(x_dim=4, y_dim=2, z_dim=2, num_blocks=3, hidden=8)
  v = jax.random.normal(KEY, (5, 4))
  params = inn.init(KEY, v)
  out, log_det = inn.apply(params, v)
  np.testing.assert_allclose(jnp.sort(out, -1), jnp.sort(v, -1), atol=1e-6)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


def test_permutation_is_seeded_and_exact():
  a = flows.Permutation(7, seed=5).indices
  b = flows.Permutation(7, seed=5).indices
  np.testing.assert_array_equal(a, b)
  assert sorted(a.tolist()) == list(range(7))
  v = jnp.arange(14.0).reshape(2, 7)
  out, _ = flows.Permutation(7, seed=5).apply({}, v)
  np.testing.assert_array_equal(out, v[:, a])


def test_padding_helpers():
  inn = flows.INN(x_dim=2, y_dim=1, z_dim=3, num_blocks=1, hidden=4)
  assert inn.width == 4
  x = jnp.ones((3, 2))
  np.testing.assert_array_equal(inn.pad_x(x), jnp.array([[1, 1, 0, 0.]] * 3))
  v = inn.join_yz(jnp.full((3, 1), 2.0), jnp.full((3, 3), 3.0))
  y, z, rest = inn.split_output(v)
  np.testing.assert_array_equal(y, 2.0)
  np.testing.assert_array_equal(z, 3.0)
  assert rest.shape == (3, 0)
  x_part, pad = inn.split_input(inn.pad_x(x))
  np.testing.assert_array_equal(x_part, x)
  np.testing.assert_array_equal(pad, 0.0)
  # Output wider than y + z: the rest is padding.
  wide = flows.INN(x_dim=5, y_dim=1, z_dim=2, num_blocks=1, hidden=4)
  assert wide.width == 5
  assert wide.split_output(jnp.zeros((2, 5)))[2].shape == (2, 2)


def test_jit_and_vmap_match_eager():
  inn = flows.INN(x_dim=3, y_dim=1, z_dim=2, num_blocks=2, hidden=8,
                  final_init_scale=0.1)
  v = jax.random.normal(KEY, (4, 3))
  params = inn.init(KEY, v)
  eager = inn.apply(params, v)
  jitted = jax.jit(inn.apply)(params, v)
  row_wise = jax.vmap(lambda r: inn.apply(params, r[None]))(v)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(row_wise[0][:, 0], eager[0], rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(row_wise[1][:, 0], eager[1], rtol=1e-6,
                             atol=1e-6)


def test_gradients_flow_both_ways():
  inn = flows.INN(x_dim=3, y_dim=1, z_dim=2, num_blocks=2, hidden=8)
  v = jax.random.normal(KEY, (4, 3))
  params = inn.init(KEY, v)

  def loss(p, method):
    return jnp.sum(inn.apply(p, v, method=method)[0] ** 2)

  for method in (None, 'inverse'):
    grads = jax.grad(loss)(params, method)
    norms = [float(jnp.linalg.norm(g))
             for g in jax.tree_util.tree_leaves(grads)]
    # Zero-initialized last layers still receive gradient, and through the
    # first coupling all subnet layers do once those are non-zero.
    assert max(norms) > 0
    assert all(np.isfinite(norms))
  # Once away from the identity, every parameter gets a gradient.
  params = _randomize(params, jax.random.PRNGKey(3), 0.2)
  grads = jax.grad(loss)(params, 'inverse')
  assert all(float(jnp.linalg.norm(g)) > 0
             for g in jax.tree_util.tree_leaves(grads))


def test_input_gradient_matches_finite_differences():
  inn = flows.INN(x_dim=2, y_dim=1, z_dim=1, num_blocks=2, hidden=8)
  v = jax.random.normal(KEY, (3, 2))
  params = _randomize(inn.init(KEY, v), jax.random.PRNGKey(1), 0.2)
  f = lambda a: jnp.sum(jnp.sin(inn.apply(params, a)[0]))
  chex.assert_numerical_grads(f, (v,), order=1, atol=5e-2, rtol=5e-2)


def test_bad_inputs_raise():
  inn = flows.INN(x_dim=3, y_dim=1, z_dim=2, num_blocks=1, hidden=4)
  params = inn.init(KEY, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match=r'\(n, 3\)'):
    inn.apply(params, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match='unknown coupling'):
    flows.INN(x_dim=3, y_dim=1, z_dim=2, coupling='nope').init(
        KEY, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match='unknown activation'):
    flows.INN(x_dim=3, y_dim=1, z_dim=2, activation='nope').init(
        KEY, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match='width'):
    flows.INN(x_dim=1, y_dim=1, z_dim=0).init(KEY, jnp.zeros((1, 1)))
  cinn = flows.conditional_inn(3, cond_dim=2, num_blocks=1, hidden=4)
  with pytest.raises(ValueError, match='condition'):
    cinn.init(KEY, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match='unconditional'):
    inn.apply(params, jnp.zeros((1, 3)), jnp.zeros((1, 2)))


def test_conditional_inn_round_trip():
  cinn = flows.conditional_inn(3, cond_dim=2, num_blocks=3, hidden=8)
  v = jax.random.normal(KEY, (4, 3))
  cond = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  params = _randomize(cinn.init(KEY, v, cond), jax.random.PRNGKey(2), 0.2)
  z, log_det = cinn.apply(params, v, cond)
  back, log_det_inv = cinn.apply(params, z, cond, method='inverse')
  np.testing.assert_allclose(back, v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=1e-5, atol=1e-5)
  ref = _exact_log_det(cinn, params, v[0], cond[0])
  np.testing.assert_allclose(log_det[0], ref, rtol=1e-4, atol=1e-4)


def test_soft_clamp_bounds_and_slope():
  s = jnp.linspace(-100.0, 100.0, 101)
  c = flows.soft_clamp(s, 2.0)
  assert float(jnp.max(jnp.abs(c))) < 2.0
  # d/ds [c * 2/pi * atan(s / c)] at s = 0 is 2/pi, whatever c.
  np.testing.assert_allclose(jax.grad(lambda a: flows.soft_clamp(a, 2.0))(0.0),
                             2.0 / np.pi, rtol=1e-6)
  np.testing.assert_allclose(flows.soft_clamp(jnp.array(2.0), 2.0),
                             2.0 * 2.0 / np.pi * np.arctan(1.0), rtol=1e-6)


def test_num_params_counts_scalars():
  mlp = flows.MLP(hidden=5, out_dim=2, depth=3)
  params = mlp.init(KEY, jnp.zeros((1, 4)))
  assert flows.num_params(params) == (4 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2)
