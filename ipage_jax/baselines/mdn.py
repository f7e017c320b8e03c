"""Mixture density network: p(x | y) as a Gaussian mixture (Bishop 2006).

An MLP maps a property y (M,) to the mixture's logits (K,), means (K, D) and
log standard deviations (K, D) (diagonal covariances); training maximizes
the likelihood of the data's x (the paper's eq. 15). Sampling for a target
draws a component from the weights and a Gaussian offset: both from one
(D + 1)-dimensional latent design of the chosen sampler (the first column,
mapped to a uniform, picks the component by inverse CDF), so maximin LHS
spreads the draws as it does for the INNs.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy.special import ndtr

from ipage_jax import flows
from ipage_jax import model as model_lib
from ipage_jax import sampling
from ipage_jax.baselines import common

Array = jax.Array
LOG_SIGMA_BOUND = 7.0  # log std clamped softly to (-7, 7), standardized units


def default_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """Depth and activation as the task's iPage subnets, width matched."""
  c = ml_collections.ConfigDict()
  c.num_components = 16
  c.hidden = 0          # 0: match iPage's parameter count
  c.depth = config.model.depth
  c.activation = config.model.activation
  c.x_noise = 0.01      # std of noise on x in training (dequantization)
  return c


class MixtureNet(nn.Module):
  """y (n, M) -> logits (n, K), means (n, K, D), log-stds (n, K, D)."""
  x_dim: int
  y_dim: int
  num_components: int
  hidden: int
  depth: int = 3
  activation: str = 'relu'

  @nn.compact
  def __call__(self, y: Array):
    k, d = self.num_components, self.x_dim
    out = flows.MLP(self.hidden, k * (1 + 2 * d), self.depth,
                    self.activation, final_init_scale=0.1)(y)
    logits, mean, log_std = jnp.split(out, [k, k + k * d], axis=-1)
    shape = y.shape[:1] + (k, d)
    log_std = flows.soft_clamp(log_std.reshape(shape), LOG_SIGMA_BOUND)
    return logits, mean.reshape(shape), log_std


def log_likelihood(logits: Array, mean: Array, log_std: Array,
                   x: Array) -> Array:
  """log p(x) (n,) of x (n, D) under the (n,)-batched diagonal mixtures."""
  z = (x[:, None, :] - mean) * jnp.exp(-log_std)
  log_normal = jnp.sum(-0.5 * jnp.square(z) - log_std
                       - 0.5 * jnp.log(2 * jnp.pi), axis=-1)      # (n, K)
  return jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_normal, -1)


def build(cfg, x_dim: int, y_dim: int, hidden: int) -> MixtureNet:
  return MixtureNet(x_dim=x_dim, y_dim=y_dim, num_components=cfg.num_components,
                    hidden=hidden, depth=cfg.depth,
                    activation=cfg.activation)


def init(net: MixtureNet, key: Array):
  return net.init(key, jnp.zeros((1, net.y_dim), jnp.float32))


def make_loss(net: MixtureNet, cfg):
  """Negative log-likelihood of x given y, batch mean."""

  def loss_fn(params, x, y, key, step):
    del step
    nll = -jnp.mean(log_likelihood(*net.apply(params, y),
                                   common.noisy(x, key, cfg.x_noise)))
    return nll, {'nll': nll}

  return loss_fn


def val(net: MixtureNet, cfg):
  del cfg
  return lambda params, x, y: -jnp.mean(
      log_likelihood(*net.apply(params, y), x))


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def sample(net: MixtureNet, params, key: Array, y_std: Array, n: int,
           sampler: str) -> Array:
  """(T, n, D) draws from p(x | y) for each of the (T, M) targets."""
  logits, mean, log_std = net.apply(params, y_std)       # (T, K), (T, K, D)
  latent = sampling.sample_latent_per_target(
      key, y_std.shape[0], n, net.x_dim + 1, sampler)    # (T, n, D + 1)
  cdf = jnp.cumsum(jax.nn.softmax(logits), -1)           # (T, K)
  pick = jax.vmap(jnp.searchsorted)(cdf, ndtr(latent[..., 0]))
  pick = jnp.minimum(pick, net.num_components - 1)       # (T, n)
  chosen = lambda a: jnp.take_along_axis(a, pick[..., None], axis=1)
  return chosen(mean) + jnp.exp(chosen(log_std)) * latent[..., 1:]


def draw(model: model_lib.Model, key, y_std, n, settings):
  return sample(model.net, model.best_params, key, y_std, n,
                settings.sampler)


SPEC = common.Spec(
    name='mdn', description='mixture density network p(x | y)',
    default_config=default_config, build=build,
    init=init,
    make_loss=make_loss, val=val, draw=draw)
