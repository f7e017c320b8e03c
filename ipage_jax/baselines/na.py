"""Neural-Adjoint (Ren, Padilla and Malof 2020).

An MLP surrogate y = f(x) trained by least squares; solutions for a target
come from gradient descent on ||f(x) - y*||^2 + boundary loss, started from
random designs uniform in the training box, `starts_per_solution` starts
per returned solution, the best ranked by the surrogate's own error (Ren et
al. keep the best T of many starts). The descent is the shared batched
localization (the same compiled Adam loop as iPage), with the same number of
steps and step sizes as iPage's localization unless set in `na.solve`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
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
  """Depth and activation as the task's iPage subnets, width matched."""
  c = ml_collections.ConfigDict()
  c.hidden = 0          # 0: match iPage's parameter count
  c.depth = config.model.depth + 1   # one subnet's layers plus one
  c.activation = config.model.activation
  # Overrides of config.solve for NA: random starts per returned solution
  # (the keep-best oversampling of the shared solve loop).
  c.solve = ml_collections.ConfigDict()
  c.solve.oversample = 10.0
  return c


class ForwardNet(nn.Module):
  """The surrogate MLP x (n, D) -> y (n, M)."""
  x_dim: int
  y_dim: int
  hidden: int
  depth: int = 4
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return flows.MLP(self.hidden, self.y_dim, self.depth, self.activation,
                     final_init_scale=0.01)(x)


def build(cfg, x_dim: int, y_dim: int, hidden: int) -> ForwardNet:
  return ForwardNet(x_dim=x_dim, y_dim=y_dim, hidden=hidden,
                    depth=cfg.depth, activation=cfg.activation)


def init(net: ForwardNet, key: Array):
  return net.init(key, jnp.zeros((1, net.x_dim), jnp.float32))


def apply(net: ForwardNet, params, x: Array) -> Array:
  """The surrogate: (n, D) -> (n, M), standardized units."""
  return net.apply(params, x)


def make_loss(net: ForwardNet, cfg):
  del cfg

  def loss_fn(params, x, y, key, step):
    del key, step
    mse = losses.fit_loss(net.apply(params, x), y)
    return mse, {'l_y': mse}

  return loss_fn


def val(net: ForwardNet, cfg):
  del cfg
  return lambda params, x, y: losses.fit_loss(net.apply(params, x), y)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def uniform_starts(key: Array, lower: Array, upper: Array, num_targets: int,
                   n: int, sampler: str) -> Array:
  """(T, n, D) starts in the box [lower, upper] (D,), one design per target."""
  d = lower.shape[0]
  keys = jax.random.split(key, num_targets)
  u = jax.vmap(lambda k: sampling.get_sampler(sampler)(k, n, d))(keys)
  return lower[None, None] + (upper - lower)[None, None] * u


def draw(model: model_lib.Model, key, y_std, n, settings):
  lower, upper = (model.x_scaler.forward(jnp.asarray(b, jnp.float32)[None])[0]
                  for b in model.x_range)
  return uniform_starts(key, lower, upper, y_std.shape[0], n,
                        settings.sampler)


SPEC = common.Spec(
    name='na', description='Neural-Adjoint: MLP surrogate + gradient descent '
    'from random starts, best kept', default_config=default_config,
    build=build, init=init, make_loss=make_loss, val=val, draw=draw,
    surrogate=apply)
