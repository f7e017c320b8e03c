"""Image blocks and the multi-scale ImageINN: inverses, log-determinants,
periodic equivariance, the flat-row interface, training, errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ipage_jax import image_flows as imf
from ipage_jax import losses

KEY = jax.random.PRNGKey(0)
# For real inits: XLA compiles the threefry generator behind ~50 parameter
# draws in about 5 s on a CPU, the rbg one in well under 1 s.
INIT_KEY = jax.random.key(0, impl='unsafe_rbg')
EPS = float(np.finfo(np.float32).eps)
CLAMP = 2.0


def _random_params(module, args, seed, scale=0.3):
  """Parameters of `module` for `args`, all drawn N(0, scale^2): away from
  the zero-initialized identity (no real init needed, so nothing compiles)."""
  shapes = jax.eval_shape(module.init, KEY, *args)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
      shapes)


def _images(shape, n=3, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n,) + shape)


@functools.partial(jax.jit, static_argnums=0)
def _both_ways(module, params, v, cond=None):
  """Forward, then inverse of the forward output, in one compiled call
  (cached per module and shapes)."""
  out, log_det = module.apply(params, v, cond)
  back, log_det_inv = module.apply(params, out, cond, method='inverse')
  return out, log_det, back, log_det_inv


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(module, params, v_row, cond_row):
  """(d, d) Jacobian of one example's flattened forward map."""
  c = None if cond_row is None else cond_row[None]
  f = lambda b: module.apply(params, b.reshape((1,) + v_row.shape), c)[0]
  return jax.jacfwd(lambda b: f(b).reshape(-1))(v_row.reshape(-1))


def _dense_log_det(module, params, v_row, cond_row=None):
  """log|det J| of one example from the dense Jacobian of the flattened map
  (independent of the code's own log-det bookkeeping). The float32 Jacobian
  is factorized in float64, so only its entries carry float32 error."""
  j = np.asarray(_jacobian(module, params, v_row, cond_row), np.float64)
  sign, log_det = np.linalg.slogdet(j)
  assert sign != 0
  return log_det


def _block(kind, channels, hidden=8, cond_dim=0):
  conv = dict(channels=channels, hidden=hidden, clamp=CLAMP,
              cond_dim=cond_dim)
  if kind == 'checker0':
    return imf.CheckerboardCoupling(parity=0, **conv)
  if kind == 'checker1':
    return imf.CheckerboardCoupling(parity=1, **conv)
  if kind == 'channel':
    return imf.ChannelCoupling(**conv)
  if kind == 'squeeze':
    return imf.Squeeze()
  if kind == 'actnorm':
    return imf.ActNorm(channels)
  if kind == 'permutation':
    return imf.ChannelPermutation(channels, seed=3)
  raise ValueError(kind)


# Affine maps per block (a ChannelCoupling is two), for the tolerances; the
# pure data movements (squeeze, permutation) must round-trip exactly.
_AFFINE_LAYERS = dict(checker0=1, checker1=1, channel=2, squeeze=0, actnorm=1,
                      permutation=0)
KINDS = tuple(_AFFINE_LAYERS)


def _block_cases():
  for shape in [(4, 4, 1), (8, 8, 2)]:
    for kind in KINDS:
      if kind == 'channel' and shape[-1] == 1:
        shape = (4, 4, 2)  # a channel split needs >= 2 channels
      yield kind, shape


@pytest.mark.parametrize('kind,shape', list(_block_cases()))
def test_block_inverse_and_log_det(kind, shape):
  module = _block(kind, shape[-1])
  v = _images(shape)
  params = _random_params(module, (v,), seed=1)
  out, log_det, back, log_det_inv = _both_ways(module, params, v)
  out_shape = ((3, shape[0] // 2, shape[1] // 2, 4 * shape[2])
               if kind == 'squeeze' else v.shape)
  chex.assert_shape([out, back, log_det, log_det_inv],
                    [out_shape, v.shape, (3,), (3,)])
  d = int(np.prod(shape))
  scale = float(jnp.max(jnp.abs(out)))
  # Each affine map rounds a few times (exp, multiply, add and the inverse
  # ones) at the scale of its values: 8 eps * scale per map.
  tol = 8 * _AFFINE_LAYERS[kind] * EPS * scale
  np.testing.assert_allclose(back, v, rtol=0, atol=tol)
  # Both directions sum the same d log-scales (|s| < clamp), recomputed from
  # inputs equal up to the round-trip error: d eps clamp per map.
  tol = _AFFINE_LAYERS[kind] * d * EPS * CLAMP
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=0, atol=tol)
  for i in (0, 2):
    ref = _dense_log_det(module, params, v[i])
    # A float32 sum of d log terms against slogdet of float32 entries:
    # d eps relative to the size of the log-determinant.
    np.testing.assert_allclose(log_det[i], ref, rtol=0,
                               atol=d * EPS * max(1.0, abs(ref)))
  if kind.startswith('checker'):
    # The kept pixels pass through exactly; the others really move.
    kept = imf.checkerboard(shape[0], shape[1], int(kind[-1]))[None] > 0
    kept = np.broadcast_to(kept, v.shape)
    np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(v)[kept])
    assert float(jnp.max(jnp.abs(out - v)[~kept])) > 0.1
  elif kind != 'squeeze':
    assert float(jnp.max(jnp.abs(out - v))) > 0.1


def test_squeeze_layout_and_odd_sizes():
  v = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  out = imf.squeeze(v)
  chex.assert_shape(out, (2, 2, 2, 12))
  # Channel (2 a + b) * c + k of squeezed pixel (i, j): v[2 i + a, 2 j + b, k].
  for i, j, a, b, k in [(0, 0, 0, 0, 0), (1, 0, 1, 1, 2), (0, 1, 1, 0, 1)]:
    assert out[1, i, j, (2 * a + b) * 3 + k] == v[1, 2 * i + a, 2 * j + b, k]
  np.testing.assert_array_equal(imf.unsqueeze(out), v)
  with pytest.raises(ValueError, match='even height and width, got 3 x 4'):
    imf.squeeze(jnp.zeros((1, 3, 4, 1)))
  with pytest.raises(ValueError, match='divisible by 4, got 6'):
    imf.unsqueeze(jnp.zeros((1, 2, 2, 6)))


def _shift_error(module, params, v, shift, shift_out=None):
  """max |f(roll(v)) - roll(f(v))| over the spatial axes, and max |f(v)|."""
  shift_out = shift if shift_out is None else shift_out
  f = jax.jit(lambda a: module.apply(params, a)[0])
  out = f(v)
  rolled = f(jnp.roll(v, shift, axis=(1, 2)))
  return (float(jnp.max(jnp.abs(rolled - jnp.roll(out, shift_out, (1, 2))))),
          float(jnp.max(jnp.abs(out))))


@pytest.mark.parametrize('kind,shifts', [
    ('checker0', [(2, 0), (0, -2), (2, 4)]),
    ('checker1', [(4, 2)]),
    ('channel', [(1, 0), (0, 3), (1, 1)]),
])
def test_couplings_commute_with_periodic_shifts(kind, shifts):
  module = _block(kind, 2)
  v = _images((8, 8, 2))
  params = _random_params(module, (v,), seed=2)
  for shift in shifts:
    err, scale = _shift_error(module, params, v, shift)
    # The same per-pixel arithmetic on moved pixels; only the summation order
    # inside the convolutions may differ: a few eps per layer (3 convs, the
    # affine map) at the scale of the values.
    assert err <= 4 * 4 * EPS * scale, (shift, err)


def test_odd_shift_breaks_checkerboard_equivariance():
  module = _block('checker0', 2)
  v = _images((8, 8, 2))
  params = _random_params(module, (v,), seed=2)
  # An odd shift swaps kept and moved pixels: not a symmetry.
  for shift in [(1, 0), (0, 1), (1, 2)]:
    err, _ = _shift_error(module, params, v, shift)
    assert err > 0.1, shift


def test_squeeze_turns_a_shift_by_two_into_a_shift_by_one():
  v = _images((8, 8, 2))
  for shift in [(2, 0), (0, 2), (2, -4)]:
    err, _ = _shift_error(imf.Squeeze(), {}, v, shift,
                          shift_out=(shift[0] // 2, shift[1] // 2))
    assert err == 0.0  # pure data movement
  err, _ = _shift_error(imf.Squeeze(), {}, v, (1, 0), shift_out=(1, 0))
  assert err > 0.1


def test_conditional_channel_coupling():
  module = _block('channel', 2, cond_dim=3)
  v = _images((4, 4, 2))
  cond = jax.random.normal(jax.random.PRNGKey(5), (3, 3))
  params = _random_params(module, (v, cond), seed=4)
  out, log_det, back, _ = _both_ways(module, params, v, cond)
  # Two affine maps, 8 eps each at the scale of the values (as above).
  np.testing.assert_allclose(
      back, v, rtol=0, atol=16 * EPS * float(jnp.max(jnp.abs(out))))
  ref = _dense_log_det(module, params, v[1], cond[1])
  np.testing.assert_allclose(log_det[1], ref, rtol=0,
                             atol=32 * EPS * max(1.0, abs(ref)))  # d = 32
  out_other, _, _, _ = _both_ways(module, params, v, cond + 1.0)
  assert float(jnp.max(jnp.abs(out_other - out))) > 1e-2
  with pytest.raises(ValueError, match='condition'):
    module.apply(params, v)


# ImageINN ------------------------------------------------------------------


def _inn(shape=(8, 8, 2), **kwargs):
  settings = dict(image_shape=shape, y_dim=1, levels=2, blocks_per_level=2,
                  hidden_channels=8, dense_blocks=1, dense_hidden=16,
                  clamp=CLAMP)
  settings.update(kwargs)
  return imf.ImageINN(**settings)


def _affine_layers(inn):
  """Affine maps in `inn`: an ActNorm and a coupling (two for the channel
  and dense GLOW ones) per block, two per dense block."""
  per_level = sum(1 + (1 if b % 2 == 0 else 2)
                  for b in range(inn.blocks_per_level))
  return inn.levels * per_level + 2 * inn.dense_blocks


def test_image_inn_sizes_and_row_helpers():
  inn = _inn(y_dim=3)
  assert (inn.x_dim, inn.y_dim, inn.z_dim, inn.width) == (128, 3, 125, 128)
  assert inn.dense_dim == 32
  assert inn.level_shapes() == [(4, 4, 8), (2, 2, 16)]
  x = jnp.arange(2 * 128, dtype=jnp.float32).reshape(2, 128)
  np.testing.assert_array_equal(inn.pad_x(x), x)
  y, z, pad = inn.split_output(x)
  chex.assert_shape([y, z, pad], [(2, 3), (2, 125), (2, 0)])
  np.testing.assert_array_equal(inn.join_yz(y, z), x)
  x_part, x_pad = inn.split_input(x)
  chex.assert_shape([x_part, x_pad], [(2, 128), (2, 0)])


@pytest.mark.parametrize('shape,levels,cond_dim',
                         [((4, 4, 1), 1, 2), ((8, 8, 2), 2, 0)])
def test_image_inn_round_trip_and_log_det(shape, levels, cond_dim):
  inn = _inn(shape, levels=levels, cond_dim=cond_dim)
  v = _images(shape).reshape(3, -1)
  cond = (jax.random.normal(jax.random.PRNGKey(3), (3, cond_dim))
          if cond_dim else None)
  params = _random_params(inn, (v, cond), seed=6, scale=0.15)
  out, log_det, back, log_det_inv = _both_ways(inn, params, v, cond)
  chex.assert_shape([out, back, log_det], [v.shape, v.shape, (3,)])
  layers, d = _affine_layers(inn), inn.x_dim
  scale = max(float(jnp.max(jnp.abs(out))), float(jnp.max(jnp.abs(v))))
  # 8 eps * scale per affine map, as for the single blocks.
  np.testing.assert_allclose(back, v, rtol=0,
                             atol=8 * layers * EPS * scale)
  # d log-scales (|s| < clamp) summed per affine map, in either order.
  np.testing.assert_allclose(log_det_inv, -log_det, rtol=0,
                             atol=layers * d * EPS * CLAMP)
  ref = _dense_log_det(inn, params, v[1], None if cond is None else cond[1])
  # d eps relative per affine map: every map adds its own float32 sum.
  np.testing.assert_allclose(log_det[1], ref, rtol=0,
                             atol=layers * d * EPS * max(1.0, abs(ref)))
  assert float(jnp.max(jnp.abs(out - v))) > 0.1
  if cond_dim:
    # The condition reaches the subnets (same compiled call).
    other = _both_ways(inn, params, v, cond + 1.0)[0]
    assert float(jnp.max(jnp.abs(other - out))) > 1e-2


def test_image_inn_output_order():
  """[dense part, deepest level's factored-out part, ..., level 1's]."""
  inn = _inn(levels=2)
  v = _images((8, 8, 2)).reshape(3, -1)
  params = _random_params(inn, (v,), seed=7, scale=0.15)
  apply = jax.jit(inn.apply)
  out = apply(params, v)[0]
  dense, level2 = inn.dense_dim, inn.dense_dim + 32  # 2 x 2 x 8 factored

  def changed(prefix):
    """Output columns that move when the parameters named `prefix*` do."""
    moved = {k: (jax.tree_util.tree_map(lambda a: a + 0.5, p)
                 if k.startswith(prefix) else p)
             for k, p in params['params'].items()}
    diff = jnp.abs(apply({'params': moved}, v)[0] - out).max(0)
    return np.flatnonzero(np.asarray(diff) > 0)

  np.testing.assert_array_equal(changed('dense_'), np.arange(dense))
  deep = changed('channel_1_')  # the coupling of level 2 (index 1)
  assert deep.max() < level2 and deep.max() >= dense and deep.min() < dense
  assert changed('channel_0_').max() == inn.width - 1  # level 1 comes last


@pytest.fixture(scope='module')
def toy():
  """An 8 x 8 x 1 ImageINN, its (zero-last-layer) init and 64 images with
  pixels ~ U(0, 1); shared so the init compiles once."""
  inn = _inn((8, 8, 1), levels=1, blocks_per_level=2, dense_blocks=1,
             dense_hidden=32)
  x = jax.random.uniform(jax.random.PRNGKey(11), (64, inn.x_dim))
  return inn, jax.jit(inn.init)(INIT_KEY, x), x


def test_image_inn_starts_as_a_permutation(toy):
  inn, params, x = toy
  out, log_det = jax.jit(inn.apply)(params, x)
  np.testing.assert_array_equal(jnp.sort(out, -1), jnp.sort(x, -1))
  np.testing.assert_array_equal(log_det, 0.0)


def test_image_inn_jit_and_row_batching():
  inn = _inn((4, 4, 1), levels=1)
  v = _images((4, 4, 1), n=4).reshape(4, -1)
  params = _random_params(inn, (v,), seed=8, scale=0.15)
  eager = inn.apply(params, v)
  apply = jax.jit(inn.apply)
  jitted = apply(params, v)
  # Eager and compiled runs may fuse differently: 8 eps per affine map at
  # the scale of the values (log-dets: that times the d terms summed).
  tol = 8 * _affine_layers(inn) * EPS * float(jnp.max(jnp.abs(eager[0])))
  np.testing.assert_allclose(eager[0], jitted[0], rtol=0, atol=tol)
  np.testing.assert_allclose(eager[1], jitted[1], rtol=0, atol=tol * inn.x_dim)
  # Rows are independent: reordering the batch reorders the outputs, and
  # changing one row leaves the others bit for bit (same compiled shape).
  perm = np.array([2, 0, 3, 1])
  shuffled = apply(params, v[perm])
  np.testing.assert_allclose(shuffled[0], jitted[0][perm], rtol=0, atol=tol)
  np.testing.assert_allclose(shuffled[1], jitted[1][perm], rtol=0,
                             atol=tol * inn.x_dim)
  edited = apply(params, v.at[1].add(1.0))
  np.testing.assert_array_equal(np.delete(edited[0], 1, 0),
                                np.delete(jitted[0], 1, 0))
  assert float(jnp.max(jnp.abs(edited[0][1] - jitted[0][1]))) > 1e-2


def test_image_inn_y_learns_a_global_statistic(toy):
  """y (first output column) fit to the mean pixel of 8 x 8 images, with the
  library's own forward-fit loss (so the flat-row interface is a drop-in)."""
  inn, params, x = toy
  y = x.mean(-1, keepdims=True)
  y = (y - y.mean()) / y.std()  # standardized, as the pipeline does
  loss_fn = losses.make_forward_fit(inn)
  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = opt.init(params)
  history = []
  for _ in range(40):
    params, opt_state, loss = step(params, opt_state)
    history.append(float(loss))
  assert np.isfinite(history).all()
  # At the start y is one pixel p ~ U(0, 1) (the net is a permutation):
  # loss = 1 + E[p^2] - 2 cov(p, y) ~ 1.26, as p correlates with the mean of
  # 64 pixels by only 1/8. Reading the global mean takes it far below that
  # (about 0.01 here after 40 steps); 0.1 of the start leaves a wide margin.
  assert history[0] > 1.1
  assert history[-1] < 0.1 * history[0], (history[0], history[-1])


@pytest.mark.parametrize('kwargs,match', [
    (dict(image_shape=(6, 8, 1), levels=2), r'divisible by 2\*\*levels = 4'),
    (dict(image_shape=(8, 8)), 'image_shape must be'),
    (dict(levels=0), 'levels must be >= 1, got 0'),
    (dict(blocks_per_level=0), 'blocks_per_level must be >= 1'),
    (dict(y_dim=33), 'y_dim=33 must be <= the 32 columns'),
    (dict(y_dim=-1), 'y_dim must be >= 0'),
    (dict(kernel_size=4), 'kernel_size must be odd, got 4'),
    (dict(activation='nope'), 'unknown activation'),
    (dict(clamp=0.0), 'clamp must be > 0'),
    (dict(dense_blocks=-1), 'dense_blocks must be >= 0'),
])
def test_image_inn_bad_attributes_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _inn(**kwargs)


def test_bad_block_inputs_raise():
  v = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match='parity must be 0 or 1, got 2'):
    jax.eval_shape(imf.CheckerboardCoupling(2, parity=2).init, KEY, v)
  with pytest.raises(ValueError, match='channels >= 2, got 1'):
    jax.eval_shape(imf.ChannelCoupling(1).init, KEY, jnp.zeros((1, 4, 4, 1)))
  with pytest.raises(ValueError, match=r'\(n, h, w, 3\), got \(1, 4, 4, 2\)'):
    jax.eval_shape(imf.ChannelCoupling(3).init, KEY, v)
  with pytest.raises(ValueError, match='kernel_size must be odd'):
    jax.eval_shape(imf.ChannelCoupling(2, kernel_size=2).init, KEY, v)
  with pytest.raises(ValueError, match=r'\(n, 32\), got \(1, 16\)'):
    jax.eval_shape(_inn((4, 4, 2), levels=1).init, KEY, jnp.zeros((1, 16)))
  inn = _inn((4, 4, 2), levels=1)
  with pytest.raises(ValueError, match=r'\(n, 31\)'):
    inn.join_yz(jnp.zeros((2, 1)), jnp.zeros((2, 30)))


def test_pipeline_builds_the_image_inn_from_the_config():
  from ipage_jax import pipeline
  config = pipeline.default_config()
  config.model.network = 'image'
  config.model.image.shape = (8, 8, 1)
  config.model.image.levels = 1
  inn = pipeline.build_inn(config, 64, 1)
  assert isinstance(inn, imf.ImageINN)
  assert (inn.x_dim, inn.y_dim, inn.z_dim, inn.width) == (64, 1, 63, 64)
  with pytest.raises(ValueError, match='holds 64 values'):
    pipeline.build_inn(config, 65, 1)
  config.model.network = 'conv'
  with pytest.raises(ValueError, match='model.network'):
    pipeline.build_inn(config, 64, 1)
