"""Training loop, iPage fit, checkpoints and bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from ipage_jax import data as data_lib
from ipage_jax import pipeline
from ipage_jax import training

EPS32 = float(np.finfo(np.float32).eps)


def _toy_data(n=512, seed=0):
  """y = x1 + 0.5 x2^2 on x ~ U(-1, 1)^2 (smooth, quickly learnable)."""
  x = jax.random.uniform(jax.random.PRNGKey(seed), (n, 2), minval=-1,
                         maxval=1)
  y = x[:, :1] + 0.5 * x[:, 1:] ** 2
  return np.array(x), np.array(y)


def _tiny_config(epochs):
  c = pipeline.default_config()
  c.model.num_blocks = 2
  c.model.hidden = 32
  c.model.width = 2
  c.train.epochs = epochs
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.train.final_learning_rate = 3e-4
  c.train.checkpoint_every = 2
  c.train.switch_fraction = 0.3
  return c


def test_fit_cuts_forward_loss_and_normalizes_latent():
  x, y = _toy_data()
  model = pipeline.fit(jax.random.PRNGKey(0), x, y, _tiny_config(60))
  hist = model.history
  assert hist['val_loss'].shape == (60,)
  assert np.isfinite(hist['loss']).all()
  # The validation rows, as fit_model draws them (its first subkey).
  key_split = jax.random.split(jax.random.PRNGKey(0), 3)[0]
  _, val_idx = data_lib.train_val_split(key_split, len(x), 0.1)
  n_val = len(val_idx)
  # Forward fit, original units: the best linear fit in x leaves the
  # residual r = 0.5 (x2^2 - 1/3), E r^2 = 1/45, E r^4 = 1/945 (moments
  # of u = x2^2, E u^k = 1/(2k + 1)), so on n_val rows its MSE has standard
  # error sqrt((1/945 - 1/45^2) / n_val). The INN has to learn the
  # curvature: its best validation MSE is below the linear one by 4 of
  # them.
  scale = float(model.y_scaler.scale[0])
  se_linear = np.sqrt((1 / 945 - 1 / 45**2) / n_val)
  assert hist['val_loss'].min() * scale**2 < 1 / 45 - 4 * se_linear
  # Latent: f_z(x) on the n data rows against N(0, 1). Its mean is within
  # 4 standard errors (1 / sqrt(n)) of 0, its distribution passes
  # Kolmogorov-Smirnov at level 1e-3, and it is independent of y: the
  # sample correlations of z and of z^2 with y are within 4 standard
  # errors (1 / sqrt(n) under independence) of 0. The untrained INN (a
  # permutation, z = the standardized x2) fails the last one: corr(x2^2,
  # y) = sqrt(var(0.5 x2^2) / var(y)) = sqrt((1/45) / (16/45)) = 1/4. (The
  # spread alone is 4 standard errors of a sample std, 1 / sqrt(2 n), below
  # 1 after these 60 short epochs: the latent loss only ramps up after
  # switch_fraction.)
  inn = model.net
  out, _ = inn.apply(model.params, inn.pad_x(model.x_scaler.forward(x)))
  z = np.asarray(inn.split_output(out)[1], np.float64)[:, 0]
  n = len(z)
  assert abs(z.mean()) < 4 / np.sqrt(n)
  assert stats.kstest(z, 'norm').pvalue > 1e-3
  y64 = y[:, 0].astype(np.float64)
  assert abs(np.corrcoef(z, y64)[0, 1]) < 4 / np.sqrt(n)
  assert abs(np.corrcoef(z**2, y64)[0, 1]) < 4 / np.sqrt(n)
  # The surrogate kept for localization is the best-validation one: on the
  # validation rows its MSE is the smallest validation loss. Same inputs
  # bit for bit (the same standardization of the same rows); the INN's
  # forward pass, compiled in another program, may round differently: per
  # row by at most the 2 blocks x 2 affine maps x 8 roundings of
  # test_flows at the scale of its values (standardized x and y, < 4 here);
  # and the surrogate's y is scaled back and again forward (4 roundings at
  # the scale of y and its mean, over the scale). Residuals r off by
  # <= delta change mean(r^2) by <= 2 mean(|r|) delta + delta^2, plus the
  # float32 sum over n_val rows (n_val eps relative).
  x_val = jnp.asarray(x[val_idx])
  y_val = model.y_scaler.forward(jnp.asarray(y[val_idx]))
  r = np.asarray(model.y_scaler.forward(pipeline.surrogate(model, x_val))
                 - y_val, np.float64)
  mean_y = float(jnp.abs(model.y_scaler.mean[0]))
  delta = EPS32 * (32 * 4.0 + 4 * (np.abs(y).max() + mean_y) / scale)
  best = hist['val_loss'].min()
  tol = 2 * np.abs(r).mean() * delta + delta**2 + n_val * EPS32 * best
  np.testing.assert_allclose(np.mean(r**2), best, rtol=0, atol=tol)


class _Interrupt(Exception):
  pass


def test_resume_equals_uninterrupted(tmp_path):
  x, y = _toy_data(256)
  config = _tiny_config(epochs=5)
  full = pipeline.fit(jax.random.PRNGKey(3), x, y, config)

  def stop_after_third(epoch, metrics):
    del metrics
    if epoch == 2:
      raise _Interrupt()

  ckpt_dir = str(tmp_path / 'ckpt')
  with pytest.raises(_Interrupt):
    pipeline.fit(jax.random.PRNGKey(3), x, y, config, checkpoint_dir=ckpt_dir,
                 progress=stop_after_third)
  # Epochs 0-1 were checkpointed (every 2); epoch 2 ran but was lost.
  resumed = pipeline.fit(jax.random.PRNGKey(3), x, y, config,
                         checkpoint_dir=ckpt_dir)
  for a, b in zip(jax.tree_util.tree_leaves(full.params),
                  jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(full.history['loss'],
                                resumed.history['loss'])


def test_mismatched_and_corrupted_checkpoints(tmp_path):
  x, y = _toy_data(256)
  ckpt_dir = str(tmp_path / 'ckpt')
  pipeline.fit(jax.random.PRNGKey(0), x, y, _tiny_config(5),
               checkpoint_dir=ckpt_dir)
  # Saved after epochs 2, 4 and 5 (every 2, and the last); 2 kept.
  assert sorted(os.listdir(ckpt_dir)) == ['4', '5']
  other = _tiny_config(5)
  other.train.learning_rate = 1e-2
  with pytest.raises(ValueError, match='different run configuration'):
    pipeline.fit(jax.random.PRNGKey(0), x, y, other, checkpoint_dir=ckpt_dir)
  for root, _, files in os.walk(os.path.join(ckpt_dir, '5')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00not a checkpoint')
  with pytest.raises(ValueError, match='checkpoint'):
    pipeline.fit(jax.random.PRNGKey(0), x, y, _tiny_config(5),
                 checkpoint_dir=ckpt_dir)


@pytest.mark.parametrize('bad,match', [
    ('nan_x', 'NaN'), ('inf_y', 'NaN or inf'), ('rows', 'different numbers'),
    ('few', 'too few'),
])
def test_bad_data_raises(bad, match):
  x, y = _toy_data(256)
  config = _tiny_config(1)
  if bad == 'nan_x':
    x[5, 1] = np.nan
  elif bad == 'inf_y':
    y[7, 0] = np.inf
  elif bad == 'rows':
    y = y[:-1]
  elif bad == 'few':
    x, y = x[:50], y[:50]
  with pytest.raises(ValueError, match=match):
    pipeline.fit(jax.random.PRNGKey(0), x, y, config)


def test_divergence_keeps_last_finite_parameters():
  """A loss that turns NaN at step 6 stops training after epoch 1."""
  x = jnp.ones((8, 1))
  y = jnp.ones((8, 1))

  def loss_fn(params, xb, yb, key, step):
    del key
    loss = jnp.mean((params['w'] * xb - yb) ** 2)
    return jnp.where(step >= 6, jnp.nan, loss), {}

  val_fn = lambda p, xv, yv: jnp.mean((p['w'] * xv - yv) ** 2)
  settings = training.TrainSettings(epochs=5, batch_size=2)  # 4 steps/epoch
  result = training.train(jax.random.PRNGKey(0), loss_fn, val_fn,
                          {'w': jnp.zeros(())}, optax.sgd(0.1), (x, y),
                          (x, y), settings)
  assert result.diverged
  assert len(result.history['loss']) == 1
  assert int(result.state.step) == 4
  assert np.isfinite(float(result.state.params['w']))
  assert float(result.state.params['w']) > 0  # moved towards 1
  with pytest.warns(RuntimeWarning, match='diverged'):
    cfg = _tiny_config(3)
    cfg.train.learning_rate = 1e30
    cfg.train.final_learning_rate = 1e30
    cfg.train.grad_clip = 0.0
    xt, yt = _toy_data(128)
    model = pipeline.fit(jax.random.PRNGKey(0), xt, yt * 1e20, cfg)
  assert model.diverged


def test_host_loop_takes_the_scan_loops_steps():
  """loop='host' (one compiled step per minibatch) makes the same SGD steps
  on the same shuffled minibatches and keys as loop='scan' (one compiled
  epoch): float64 least squares w x + b ~ y with an augmentation that adds
  key-dependent noise, so a different batch order or key would show. The
  two programs may only reassociate the 4-term batch sums (<= 4 eps64
  relative per gradient); SGD at lr 0.1 on this loss is contractive, so 3
  epochs x 4 steps stay within 12 x 0.1 x 4 eps64 |g| (|g| <= 10 here):
  atol 1e-13."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(18, 1)))
    y = 2.0 * x + 0.5
    loss_fn = lambda p, xb, yb, key, step: (
        jnp.mean((p['w'] * xb + p['b'] - yb) ** 2), {'w': p['w']})
    val_fn = lambda p, xv, yv: jnp.mean((p['w'] * xv + p['b'] - yv) ** 2)
    noise = lambda key, xb: xb + 0.1 * jax.random.normal(key, xb.shape,
                                                          xb.dtype)
    runs = {}
    for loop in training.LOOPS:
      settings = training.TrainSettings(epochs=3, batch_size=4,
                                        augment=noise, loop=loop)
      params = {'w': jnp.zeros((), jnp.float64),
                'b': jnp.zeros((), jnp.float64)}
      runs[loop] = training.train(jax.random.PRNGKey(3), loss_fn, val_fn,
                                  params, optax.sgd(0.1), (x, y), (x, y),
                                  settings)
  scan, host = runs['scan'], runs['host']
  assert int(host.state.step) == int(scan.state.step) == 12
  assert sorted(host.history) == sorted(scan.history)
  for name in scan.history:
    np.testing.assert_allclose(host.history[name], scan.history[name],
                               rtol=0, atol=1e-13)
  for name in ('w', 'b'):
    np.testing.assert_allclose(host.state.params[name],
                               scan.state.params[name], rtol=0, atol=1e-13)
    np.testing.assert_allclose(host.state.best_params[name],
                               scan.state.best_params[name], rtol=0,
                               atol=1e-13)
  assert abs(float(scan.state.params['w']) - 2.0) < 1.0  # it trained
  with pytest.raises(ValueError, match='unknown training loop'):
    training.TrainSettings(epochs=1, batch_size=1, loop='python')


def test_augment_transforms_training_batches_only():
  """SGD on the loss mean((w - x)^2): the gradient sees the augmented x,
  the validation loss the raw one. An augment that adds 10 moves w to the
  mean of x + 10; validation then reads (w - x)^2 on the raw x."""
  x = jnp.arange(8.0)[:, None]
  y = jnp.zeros((8, 1))

  def loss_fn(params, xb, yb, key, step):
    del yb, key, step
    return jnp.mean((params['w'] - xb) ** 2), {}

  def shift(key, xb):
    del key
    return xb + 10.0

  val_fn = lambda p, xv, yv: jnp.mean((p['w'] - xv) ** 2)
  init = {'w': jnp.zeros(())}
  runs = {}
  for name, augment in (('plain', None), ('shifted', shift)):
    settings = training.TrainSettings(epochs=200, batch_size=8,
                                      augment=augment)
    runs[name] = training.train(jax.random.PRNGKey(0), loss_fn, val_fn, init,
                                optax.sgd(0.1), (x, y), (x, y), settings)
  # Full-batch SGD, lr 0.1: w <- w - 0.2 (w - m), m the mean of the
  # (shifted) x, contracts the error by 0.8 a step, from |m| at w = 0 to
  # 0.8^200 |m| < 1e-18 after 200 steps. In float32 each step adds the
  # rounding of w + update (half an ulp of w, <= eps |w| / 2) and 0.1 times
  # that of the gradient 2 mean(w - x) (8 subtractions and 7 additions of
  # terms <= max |x - m|, eps / 2 each, doubled): the error settles below
  # (eps |m| / 2 + 1.5 eps max |x - m|) / (1 - 0.8).
  mean = float(np.mean(np.arange(8.0)))
  spread = 3.5  # max |x - m|
  for name, m in (('plain', mean), ('shifted', mean + 10)):
    tol_w = (EPS32 * abs(m) / 2 + 1.5 * EPS32 * spread) / 0.2
    np.testing.assert_allclose(runs[name].state.params['w'], m, rtol=0,
                               atol=tol_w)
  # Validation on the raw rows: var(x) + 10^2 at w = mean + 10. d val / d w
  # = 2 (w - mean) = 20 carries the error of w; the float32 mean of 8
  # squares <= 13.5^2 adds 8 roundings (eps / 2 each) at that size.
  var = float(np.var(np.arange(8.0)))
  tol_w = (EPS32 * (mean + 10) / 2 + 1.5 * EPS32 * spread) / 0.2
  np.testing.assert_allclose(runs['shifted'].history['val_loss'][-1],
                             var + 100.0, rtol=0,
                             atol=20 * tol_w + 4 * EPS32 * 13.5**2)


def test_padded_layout_drives_padding_to_zero_and_posterior_follows_y():
  """Layout [y, z, pad] (Ardizzone et al. 2019): on the toy problem the
  padding outputs are trained to ~0, and the posterior f^-1([y*, z, 0])
  depends on y*."""
  x, y = _toy_data()
  config = _tiny_config(60)
  config.model.width = 4
  config.model.layout = 'padded'   # z_dim 0: x_dim - y_dim = 1
  model = pipeline.fit(jax.random.PRNGKey(0), x, y, config)
  inn = model.net
  assert (inn.y_dim, inn.z_dim, inn.width) == (1, 1, 4)
  x_in = inn.pad_x(model.x_scaler.forward(x))
  y_out, z_out, pad_out = inn.split_output(inn.apply(model.params, x_in)[0])
  assert (y_out.shape, z_out.shape, pad_out.shape) == (
      (512, 1), (512, 1), (512, 2))
  # The untrained INN is a permutation of its 4 input columns (the two
  # standardized x columns, mean square ~1, and two of padding noise), so
  # its padding outputs hold at least one data column; trained, each
  # padding output keeps less than 1 % of a standardized column's power.
  untrained = inn.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
  pad_untrained = inn.split_output(inn.apply(untrained, x_in)[0])[2]
  assert np.max(np.mean(np.square(pad_untrained), 0)) > 0.5
  assert np.max(np.mean(np.square(pad_out), 0)) < 0.01
  # Posterior samples for two targets. Uniform draws from the box have
  # E (y(x) - y*)^2 = var y + (E y - y*)^2 = 16/45 + (1/6 - y*)^2 (closed
  # form, E y = 1/6, var y = 1/3 + (1/5 - 1/9) / 4); the posterior must
  # do 10x better, and the two clouds must differ: on the exact posterior
  # x1 = y* - x2^2 / 2 with x2 ~ U(-1, 1), so mean x1 = y* - 1/6, 1.5 apart
  # for these targets; the samples' means must be at least half that
  # apart and the two x1 samples distinguishable (two-sample KS).
  clouds = []
  for i, target in enumerate((-0.5, 1.0)):
    y_std = model.y_scaler.forward(jnp.array([[target]], jnp.float32))
    x_std = pipeline.sample_posterior(inn, model.params,
                                      jax.random.PRNGKey(i), y_std, 500,
                                      'srs')[0]
    xs = np.asarray(model.x_scaler.inverse(x_std), np.float64)
    q = np.mean((xs[:, 0] + 0.5 * xs[:, 1] ** 2 - target) ** 2)
    assert q < (16 / 45 + (1 / 6 - target) ** 2) / 10, (target, q)
    clouds.append(xs[:, 0])
  assert clouds[1].mean() - clouds[0].mean() > 0.75
  assert stats.ks_2samp(clouds[0], clouds[1]).pvalue < 1e-6
