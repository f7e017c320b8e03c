"""Conditional INN (Ardizzone et al. 2019; Kruse et al. 2021).

x <-> z given y: the INN of `flows.conditional_inn`, whose every coupling
subnet also sees y, trained by maximum likelihood (the paper's eq. 13,
0.5 ||z||^2 - log|det J_{x -> z}|). Solutions for a target are
x = f^-1(z; y*) with z from the chosen latent design. Same coupling type,
block count, depth and activation as the task's iPage INN; the subnet
width matches iPage's parameter count unless set.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from ipage_jax import flows
from ipage_jax import losses
from ipage_jax import model as model_lib
from ipage_jax import sampling
from ipage_jax.baselines import common

Array = jax.Array


def default_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """Architecture as the task's iPage INN (`config.model`), width matched."""
  m = config.model
  c = ml_collections.ConfigDict()
  c.hidden = 0          # 0: match iPage's parameter count
  c.num_blocks = m.num_blocks
  c.depth = m.depth
  c.activation = m.activation
  c.coupling = m.coupling
  c.clamp = m.clamp
  c.num_bins = 8        # coupling='spline': segments per spline
  c.spline_bound = 3.0  # coupling='spline': half-width of its interval
  c.x_noise = 0.01      # std of noise on x in training (dequantization)
  c.y_noise = 0.0       # std of noise on the condition in training
  return c


def build(cfg, x_dim: int, y_dim: int, hidden: int) -> flows.INN:
  return flows.conditional_inn(
      x_dim, y_dim, num_blocks=cfg.num_blocks, hidden=hidden,
      depth=cfg.depth, activation=cfg.activation, coupling=cfg.coupling,
      clamp=cfg.clamp, num_bins=cfg.num_bins, spline_bound=cfg.spline_bound)


def init(net: flows.INN, key: Array):
  return net.init(key, jnp.zeros((1, net.width), jnp.float32),
                  jnp.zeros((1, net.cond_dim), jnp.float32))


def _nll(net: flows.INN, params, x: Array, y: Array) -> Array:
  z, log_det = net.apply(params, x, y)
  return losses.conditional_max_likelihood_loss(z, log_det)


def make_loss(net: flows.INN, cfg):
  """Eq. 13 on noisy x and y, batch mean."""

  def loss_fn(params, x, y, key, step):
    del step
    key_x, key_y = jax.random.split(key)
    nll = _nll(net, params, common.noisy(x, key_x, cfg.x_noise),
               common.noisy(y, key_y, cfg.y_noise))
    return nll, {'nll': nll}

  return loss_fn


def val(net: flows.INN, cfg):
  """Median NLL of the validation rows (lower is better).

  Not the mean: where p(x | y) is degenerate (x on a lower-dimensional set
  for each y, as on the robot arm), a few held-out rows just off the learned
  set get NLLs of 1e5 and more, and a mean-based keep-best would then keep
  the nearly untrained parameters of the first epochs.
  """
  del cfg

  def val_fn(params, x, y):
    return jnp.median(losses.conditional_nll(*net.apply(params, x, y)))

  return val_fn


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def sample(net: flows.INN, params, key: Array, y_std: Array, n: int,
           sampler: str) -> Array:
  """(T, n, D) samples x = f^-1(z; y) for each of the (T, M) targets."""
  num_targets = y_std.shape[0]
  z = sampling.sample_latent_per_target(key, num_targets, n, net.x_dim,
                                        sampler).reshape(-1, net.x_dim)
  cond = jnp.repeat(y_std, n, axis=0)
  x = net.apply(params, z, cond, method='inverse')[0]
  return x.reshape(num_targets, n, net.x_dim)


def draw(model: model_lib.Model, key, y_std, n, settings):
  return sample(model.net, model.best_params, key, y_std, n,
                settings.sampler)


SPEC = common.Spec(
    name='cinn', description='conditional INN x <-> z given y (max. likelihood)',
    default_config=default_config, build=build, init=init,
    make_loss=make_loss, val=val, draw=draw)
