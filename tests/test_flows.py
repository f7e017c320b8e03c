"""Invertible blocks: exact inverses, log-determinants, shapes, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import flows

KEY = jax.random.PRNGKey(0)
EPS32 = float(np.finfo(np.float32).eps)
CLAMP = 2.0

# Float32 roundings of one elementwise map plus its inverse, each at most
# eps at the scale of the values. Affine: exp(s), multiply, add, then
# subtract, exp(-s), multiply, and exp(s) exp(-s) != 1 (2 more): 8. Spline:
# the rational quadratic and its derivative (~12 operations) and the
# inverse's stable quadratic-root formula (~20): 32.
ULPS = dict(affine=8, spline=32)
# (kind of elementwise map, how many) per block: a GLOW coupling moves both
# halves, the others one; a permutation only moves data (exact).
MAPS = dict(glow=('affine', 2), realnvp=('affine', 1), spline=('spline', 1),
            actnorm=('affine', 1), permutation=('affine', 0))


def _ulps(kind):
  """Roundings budgeted for one block of `kind` (see `ULPS`, `MAPS`)."""
  map_kind, count = MAPS[kind]
  return ULPS[map_kind] * count


def _inn_ulps(inn):
  """Roundings budgeted for a whole INN: its couplings and ActNorms."""
  per_block = _ulps(inn.coupling) + (_ulps('actnorm') if inn.actnorm else 0)
  return inn.num_blocks * per_block


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
    return flows.GlowCoupling(clamp=CLAMP, **common)
  if kind == 'realnvp':
    return flows.AffineCoupling(clamp=CLAMP, **common)
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


def _jacobians(module, params, v, cond, method=None):
  """(n, d, d) float32 Jacobians of every row's map by forward-mode AD, as
  float64 (independent of the code's own log-det bookkeeping)."""
  def f(a, c):
    c = None if cond is None else c[None]
    return module.apply(params, a[None], c, method=method)[0][0]
  c = jnp.zeros((v.shape[0], 0)) if cond is None else cond
  return np.asarray(jax.vmap(jax.jacfwd(f))(v, c), np.float64)


def _check_log_det(log_det, jac, ulps):
  """The code's log-det of one row against slogdet of its dense Jacobian.

  The code sums d log terms per map, each of size <= max(clamp, |log det|)
  and off by `ulps` roundings: ulps d eps max(clamp, |log det|) in all. The
  reference factorizes in float64, so only the Jacobian's entries carry
  error, `ulps` eps relative each; d log|det J| = tr(J^-1 dJ) then moves by
  at most ulps eps sum_ij |J^-1|_ji |J|_ij (a Skeel condition number, about
  d for these near-triangular Jacobians).
  """
  d = jac.shape[0]
  sign, ref = np.linalg.slogdet(jac)
  assert sign != 0
  skeel = float(np.sum(np.abs(np.linalg.inv(jac)).T * np.abs(jac)))
  tol = ulps * EPS32 * (d * max(CLAMP, abs(ref)) + skeel)
  np.testing.assert_allclose(log_det, ref, rtol=0, atol=tol)


def _check_round_trip(back, v, out, jac_inv, ulps):
  """back = inverse(forward(v)) against v.

  Every rounding is at most eps at the scale of the values; to first order
  the inverse passes a perturbation of its input on amplified by at most
  ||J_inv||_inf (the inverse's Jacobians at the rows of `out`, (n, d, d); a
  condition estimate).
  """
  scale = max(float(jnp.max(jnp.abs(v))), float(jnp.max(jnp.abs(out))))
  amp = max(1.0, float(np.abs(jac_inv).sum(-1).max()))
  np.testing.assert_allclose(back, v, rtol=0,
                             atol=ulps * EPS32 * scale * amp)


def _check_log_det_inv(log_det_inv, log_det, d, ulps):
  """Both directions sum the same d log terms per map (each of size <=
  max(clamp, |log det|)), recomputed from inputs equal up to the round
  trip: ulps d eps max(clamp, |log det|)."""
  size = max(CLAMP, float(jnp.max(jnp.abs(log_det))))
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=0,
                             atol=ulps * d * EPS32 * size)


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
  ulps = _ulps(kind)
  jac = _jacobians(module, params, v, None)
  jac_inv = _jacobians(module, params, out, None, method='inverse')
  if kind == 'permutation':
    # Pure data movement: exact both ways.
    np.testing.assert_array_equal(back, v)
    np.testing.assert_array_equal(log_det, 0.0)
  _check_round_trip(back, v, out, jac_inv, ulps)
  _check_log_det_inv(log_det_inv, log_det, dim, ulps)
  for i in range(v.shape[0]):
    _check_log_det(log_det[i], jac[i], ulps)
    _check_log_det(log_det_inv[i], jac_inv[i], ulps)
  if kind not in ('permutation',):
    # Random parameters really move the points (the checks above are not
    # trivially passed by an identity map): 1e-2 is far above the round-off
    # tolerances (~1e-5).
    assert float(jnp.max(jnp.abs(out - v))) > 1e-2


@pytest.mark.parametrize('kind', ['glow', 'realnvp', 'spline'])
def test_conditional_coupling(kind):
  module = _block(kind, 4, cond_dim=2)
  v, cond, params = _setup(module, 4, cond_dim=2)
  out, log_det = module.apply(params, v, cond)
  back, _ = module.apply(params, out, cond, method='inverse')
  jac = _jacobians(module, params, v, cond)
  # The inverse's Jacobian at out is the inverse of the forward one at v.
  _check_round_trip(back, v, out, np.linalg.inv(jac), _ulps(kind))
  for i in range(v.shape[0]):
    _check_log_det(log_det[i], jac[i], _ulps(kind))
  # The condition changes the map.
  out_other, _ = module.apply(params, v, cond + 1.0)
  assert float(jnp.max(jnp.abs(out_other - out))) > 1e-3


@pytest.mark.parametrize('coupling', flows.COUPLINGS)
def test_deep_inn_round_trip_and_log_det(coupling):
  inn = flows.INN(x_dim=5, y_dim=2, z_dim=3, num_blocks=8, hidden=16,
                  coupling=coupling, actnorm=True, activation='leaky_relu',
                  clamp=CLAMP)
  v, _, params = _setup(inn, inn.width, n=5, seed=1)
  params = _randomize(params, jax.random.PRNGKey(7), scale=0.15)
  out, log_det = inn.apply(params, v)
  back, log_det_inv = inn.apply(params, out, method='inverse')
  ulps = _inn_ulps(inn)  # 8 blocks of an ActNorm and a coupling
  jac = _jacobians(inn, params, v, None)
  _check_round_trip(back, v, out, np.linalg.inv(jac), ulps)
  _check_log_det_inv(log_det_inv, log_det, inn.width, ulps)
  for i in range(v.shape[0]):
    _check_log_det(log_det[i], jac[i], ulps)


def test_inn_starts_as_a_permutation():
  inn = flows.INN(x_dim=4, y_dim=2, z_dim=2, num_blocks=3, hidden=8)
  v = jax.random.normal(KEY, (5, 4))
  params = inn.init(KEY, v)
  out, log_det = inn.apply(params, v)
  # Zero last layers give s = t = 0 exactly, so u exp(0) + 0 = u in float32:
  # the output is exactly a permutation of the input.
  np.testing.assert_array_equal(jnp.sort(out, -1), jnp.sort(v, -1))
  np.testing.assert_array_equal(log_det, 0.0)


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
  # Compiled, batched and eager runs may fuse, contract (FMA) and order sums
  # differently: every rounding may differ, so the forward half of the round
  # trip budget at the scale of the values, and for the log-dets d terms of
  # size <= clamp per map.
  ulps = _inn_ulps(inn)
  tol = ulps * EPS32 * float(jnp.max(jnp.abs(eager[0])))
  tol_ld = ulps * inn.width * EPS32 * CLAMP
  for got in (jitted, (row_wise[0][:, 0], row_wise[1][:, 0])):
    np.testing.assert_allclose(got[0], eager[0], rtol=0, atol=tol)
    np.testing.assert_allclose(got[1], eager[1], rtol=0, atol=tol_ld)


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
  f = lambda p, a: jnp.sum(jnp.sin(inn.apply(p, a)[0]))
  grad = np.asarray(jax.grad(f, argnums=1)(params, v))
  # Reference: central differences of the same network in float64, step h:
  # truncation ~ h^2 |d^3 f| and rounding ~ 1e-16 / h, both < 1e-10.
  h = 1e-6
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                 params)
    v64 = np.asarray(v, np.float64)
    ref = np.zeros(v.shape)
    for i, j in np.ndindex(*v.shape):
      e = np.zeros(v.shape)
      e[i, j] = h
      ref[i, j] = float(f(p64, v64 + e) - f(p64, v64 - e)) / (2 * h)
  # Back-propagation through the same maps rounds as the forward pass does:
  # the round-trip budget at the scale of the gradient, plus 4 roundings for
  # the sum over the outputs' contributions and the sine.
  ulps = _inn_ulps(inn) + 4
  np.testing.assert_allclose(grad, ref, rtol=0,
                             atol=ulps * EPS32 * max(1.0, np.abs(ref).max()))


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
  ulps = _inn_ulps(cinn)
  jac = _jacobians(cinn, params, v, cond)
  _check_round_trip(back, v, z, np.linalg.inv(jac), ulps)
  _check_log_det_inv(log_det_inv, log_det, cinn.width, ulps)
  for i in range(v.shape[0]):
    _check_log_det(log_det[i], jac[i], ulps)


def test_soft_clamp_bounds_and_slope():
  s = jnp.linspace(-100.0, 100.0, 101)
  c = flows.soft_clamp(s, 2.0)
  assert float(jnp.max(jnp.abs(c))) < 2.0
  # Float32: the constant 2 c / pi (rounded once), s / c, atan (<= 2 ulps)
  # or its derivative 1 / (1 + (s/c)^2), and the products: <= 4 roundings.
  # d/ds [c * 2/pi * atan(s / c)] at s = 0 is 2/pi, whatever c.
  np.testing.assert_allclose(jax.grad(lambda a: flows.soft_clamp(a, 2.0))(0.0),
                             2.0 / np.pi, rtol=4 * EPS32)
  np.testing.assert_allclose(flows.soft_clamp(jnp.array(2.0), 2.0),
                             2.0 * 2.0 / np.pi * np.arctan(1.0),
                             rtol=4 * EPS32)


def test_num_params_counts_scalars():
  mlp = flows.MLP(hidden=5, out_dim=2, depth=3)
  params = mlp.init(KEY, jnp.zeros((1, 4)))
  assert flows.num_params(params) == (4 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2)
