"""Training loop, iPage fit, checkpoints and bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ipage_jax import pipeline
from ipage_jax import training


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
  # Forward fit: validation MSE (standardized units) down by more than 10x
  # from the first epoch.
  assert hist['val_loss'].min() < hist['val_loss'][0] / 10
  # Latent: f_z(x) on the data is close to N(0, I).
  inn = model.net
  out, _ = inn.apply(model.params, inn.pad_x(model.x_scaler.forward(x)))
  z = np.asarray(inn.split_output(out)[1])
  np.testing.assert_allclose(z.mean(0), 0.0, atol=0.2)
  np.testing.assert_allclose(z.std(0), 1.0, atol=0.25)
  # The surrogate kept for localization is the best-validation one.
  sur = pipeline.surrogate(model, jnp.asarray(x))
  mse = float(jnp.mean((model.y_scaler.forward(sur) -
                        model.y_scaler.forward(jnp.asarray(y))) ** 2))
  assert mse < 2 * hist['val_loss'].min() + 1e-3


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
  mean = float(jnp.mean(x))
  np.testing.assert_allclose(runs['plain'].state.params['w'], mean, rtol=1e-4)
  np.testing.assert_allclose(runs['shifted'].state.params['w'], mean + 10,
                             rtol=1e-4)
  # Validation on the raw rows: var(x) + 10^2 at w = mean + 10.
  var = float(jnp.var(x))
  np.testing.assert_allclose(runs['shifted'].history['val_loss'][-1],
                             var + 100.0, rtol=1e-4)
