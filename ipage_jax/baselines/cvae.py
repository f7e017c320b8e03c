"""Conditional variational autoencoder (Sohn et al. 2015; Ma et al. 2019).

Encoder q(z | x, y) = N(mu, diag sigma^2), decoder x_hat = g(z, y); trained
on the paper's eq. 14, alpha ||x - x_hat||^2 + beta KL(q || N(0, I)), by
the reparameterization trick. Solutions for a target y* are g(z, y*) with z
from the chosen latent design.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ipage_jax import flows
from ipage_jax import model as model_lib
from ipage_jax import sampling
from ipage_jax.baselines import common

Array = jax.Array


def default_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """Depth and activation as the task's iPage subnets, width matched."""
  c = ml_collections.ConfigDict()
  c.hidden = 0          # 0: match iPage's parameter count (both networks)
  c.depth = config.model.depth
  c.activation = config.model.activation
  c.latent_dim = 0      # 0: D, the design dimension
  c.alpha = 1.0         # reconstruction weight
  c.beta = 0.1          # KL weight
  return c


class CVAE(nn.Module):
  """Encoder (x, y) -> (mu, log_var) and decoder (z, y) -> x, both MLPs."""
  x_dim: int
  y_dim: int
  latent_dim: int
  hidden: int
  depth: int = 3
  activation: str = 'relu'

  def setup(self):
    mlp = functools.partial(flows.MLP, self.hidden, depth=self.depth,
                            activation=self.activation, final_init_scale=0.01)
    self.encoder = mlp(2 * self.latent_dim)
    self.decoder = mlp(self.x_dim)

  def encode(self, x: Array, y: Array) -> tuple[Array, Array]:
    """(n, D), (n, M) -> mean, log-variance, each (n, L)."""
    out = self.encoder(jnp.concatenate([x, y], -1))
    return jnp.split(out, 2, axis=-1)

  def decode(self, z: Array, y: Array) -> Array:
    """(n, L), (n, M) -> (n, D) reconstruction."""
    return self.decoder(jnp.concatenate([z, y], -1))

  def __call__(self, x: Array, y: Array, eps: Array):
    """Reconstruction (n, D), mean and log-variance (n, L) for noise eps."""
    mean, log_var = self.encode(x, y)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return self.decode(z, y), mean, log_var


def build(cfg, x_dim: int, y_dim: int, hidden: int) -> CVAE:
  return CVAE(x_dim=x_dim, y_dim=y_dim, latent_dim=cfg.latent_dim or x_dim,
              hidden=hidden, depth=cfg.depth, activation=cfg.activation)


def init(net: CVAE, key: Array):
  zeros = lambda d: jnp.zeros((1, d), jnp.float32)
  return net.init(key, zeros(net.x_dim), zeros(net.y_dim),
                  zeros(net.latent_dim))


def kl_to_standard_normal(mean: Array, log_var: Array) -> Array:
  """KL(N(mean, exp(log_var)) || N(0, I)) per row, (n, L) -> (n,)."""
  return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var,
                       -1)


def _elbo_terms(net: CVAE, params, x, y, eps):
  x_hat, mean, log_var = net.apply(params, x, y, eps)
  recon = jnp.mean(jnp.sum(jnp.square(x - x_hat), -1))
  return recon, jnp.mean(kl_to_standard_normal(mean, log_var))


def make_loss(net: CVAE, cfg):
  """Eq. 14: alpha * reconstruction + beta * KL, batch means."""

  def loss_fn(params, x, y, key, step):
    del step
    eps = jax.random.normal(key, (x.shape[0], net.latent_dim), x.dtype)
    recon, kl = _elbo_terms(net, params, x, y, eps)
    return cfg.alpha * recon + cfg.beta * kl, {'recon': recon, 'kl': kl}

  return loss_fn


def val(net: CVAE, cfg):
  """The loss at the posterior means (noise-free, so epochs compare)."""

  def val_fn(params, x, y):
    eps = jnp.zeros((x.shape[0], net.latent_dim), x.dtype)
    recon, kl = _elbo_terms(net, params, x, y, eps)
    return cfg.alpha * recon + cfg.beta * kl

  return val_fn


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def sample(net: CVAE, params, key: Array, y_std: Array, n: int,
           sampler: str) -> Array:
  """(T, n, D) decoded designs for each of the (T, M) targets."""
  num_targets = y_std.shape[0]
  z = sampling.sample_latent_per_target(key, num_targets, n, net.latent_dim,
                                        sampler)
  x = net.apply(params, z.reshape(-1, net.latent_dim),
                jnp.repeat(y_std, n, axis=0), method='decode')
  return x.reshape(num_targets, n, net.x_dim)


def draw(model: model_lib.Model, key, y_std, n, settings):
  return sample(model.net, model.best_params, key, y_std, n,
                settings.sampler)


SPEC = common.Spec(
    name='cvae', description='conditional variational autoencoder',
    default_config=default_config, build=build, init=init,
    make_loss=make_loss, val=val, draw=draw)
