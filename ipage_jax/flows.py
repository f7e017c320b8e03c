"""Invertible building blocks: couplings, permutations, ActNorm, (c)INN.

Every block is a Flax linen module with two methods over a batch of row
vectors `v` of shape (n, dim):

  out, log_det = block.apply(variables, v, cond)                    # forward
  v, log_det = block.apply(variables, out, cond, method='inverse')  # inverse

`log_det` is log |det d out / d v| per row, shape (n,); the inverse returns
the log-determinant of the inverse map, i.e. minus the forward one at the
matching point. `cond` is an optional (n, cond_dim) condition fed to every
coupling subnet (conditional INN); it is ignored by blocks without subnets.

Subnets end in a zero-initialized layer by default, so every coupling starts
as the identity and a deep stack starts as a fixed permutation.
"""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_ACTIVATIONS = {
    'relu': nn.relu,
    'leaky_relu': nn.leaky_relu,  # negative slope 0.01, as torch's default
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'silu': nn.silu,
    'elu': nn.elu,
}
COUPLINGS = ('glow', 'realnvp', 'spline')


def get_activation(name: str):
  """Returns the activation function called `name` (see `_ACTIVATIONS`)."""
  if name not in _ACTIVATIONS:
    raise ValueError(
        f'unknown activation {name!r}; expected one of {tuple(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


def soft_clamp(s: Array, clamp: float) -> Array:
  """Smoothly limits log-scales to (-clamp, clamp): clamp * 2/pi * atan(s/c)."""
  return clamp * (2.0 / jnp.pi) * jnp.arctan(s / clamp)


class MLP(nn.Module):
  """Fully connected subnet: `depth` Dense layers, the last one linear.

  Attributes:
    hidden: width of the hidden layers.
    out_dim: output width.
    depth: number of Dense layers (>= 1), e.g. 3 = two hidden + output.
    activation: name of the hidden activation (see `get_activation`).
    final_init_scale: std of the last layer's weights at init; 0 gives
      exactly zero outputs, so a coupling starts as the identity.
  """

  hidden: int
  out_dim: int
  depth: int = 3
  activation: str = 'relu'
  final_init_scale: float = 0.0

  @nn.compact
  def __call__(self, h: Array) -> Array:
    act = get_activation(self.activation)
    for _ in range(self.depth - 1):
      h = act(nn.Dense(self.hidden)(h))
    if self.final_init_scale > 0:
      kernel_init = nn.initializers.normal(self.final_init_scale)
    else:
      kernel_init = nn.initializers.zeros
    return nn.Dense(self.out_dim, kernel_init=kernel_init)(h)


def _check_width(v: Array, dim: int, what: str) -> None:
  if v.ndim != 2 or v.shape[-1] != dim:
    raise ValueError(f'{what} expects input of shape (n, {dim}), got {v.shape}')


def _with_cond(h: Array, cond: Optional[Array], cond_dim: int) -> Array:
  """Appends the condition to a subnet input, checking its shape."""
  if cond_dim == 0:
    if cond is not None:
      raise ValueError('a condition was given to an unconditional block')
    return h
  if cond is None or cond.shape != (h.shape[0], cond_dim):
    got = None if cond is None else cond.shape
    raise ValueError(
        f'condition of shape ({h.shape[0]}, {cond_dim}) required, got {got}')
  return jnp.concatenate([h, cond], axis=-1)


class _Coupling(nn.Module):
  """Shared attributes of the coupling blocks (split into two halves).

  Attributes:
    dim: width of the rows transformed (>= 2).
    hidden / depth / activation / final_init_scale: subnet settings (`MLP`).
    cond_dim: width of the condition fed to every subnet (0: none).
  """

  dim: int
  hidden: int = 128
  depth: int = 3
  activation: str = 'relu'
  cond_dim: int = 0
  final_init_scale: float = 0.0

  @property
  def split(self) -> tuple[int, int]:
    """Widths (d1, d2) of the first and second halves."""
    d1 = self.dim // 2
    return d1, self.dim - d1

  def _subnet(self, out_dim: int, name: str) -> MLP:
    if self.dim < 2:
      raise ValueError(f'a coupling needs dim >= 2, got {self.dim}')
    return MLP(self.hidden, out_dim, self.depth, self.activation,
               self.final_init_scale, name=name)


class GlowCoupling(_Coupling):
  """GLOW-style affine coupling: both halves transformed in turn.

  v1 = u1 * exp(c(s2(u2))) + t2(u2);  v2 = u2 * exp(c(s1(v1))) + t1(v1),
  with c the soft clamp (`soft_clamp`) and (s, t) from one subnet per half
  (Ardizzone et al. 2019, "Analyzing inverse problems with invertible neural
  networks"; Kingma & Dhariwal 2018).
  """

  clamp: float = 2.0

  def setup(self):
    d1, d2 = self.split
    self.net1 = self._subnet(2 * d2, 'net1')  # conditions on v1, moves u2
    self.net2 = self._subnet(2 * d1, 'net2')  # conditions on u2, moves u1

  def _scale_shift(self, net, h, cond):
    s, t = jnp.split(net(_with_cond(h, cond, self.cond_dim)), 2, axis=-1)
    return soft_clamp(s, self.clamp), t

  def __call__(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    u1, u2 = jnp.split(v, [self.split[0]], axis=-1)
    s2, t2 = self._scale_shift(self.net2, u2, cond)
    v1 = u1 * jnp.exp(s2) + t2
    s1, t1 = self._scale_shift(self.net1, v1, cond)
    v2 = u2 * jnp.exp(s1) + t1
    return jnp.concatenate([v1, v2], -1), s1.sum(-1) + s2.sum(-1)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    v1, v2 = jnp.split(v, [self.split[0]], axis=-1)
    s1, t1 = self._scale_shift(self.net1, v1, cond)
    u2 = (v2 - t1) * jnp.exp(-s1)
    s2, t2 = self._scale_shift(self.net2, u2, cond)
    u1 = (v1 - t2) * jnp.exp(-s2)
    return jnp.concatenate([u1, u2], -1), -(s1.sum(-1) + s2.sum(-1))


class AffineCoupling(_Coupling):
  """RealNVP-style affine coupling: the second half moves, the first stays.

  v1 = u1;  v2 = u2 * exp(c(s(u1))) + t(u1)  (Dinh et al. 2017).
  """

  clamp: float = 2.0

  def setup(self):
    self.net = self._subnet(2 * self.split[1], 'net')

  def _scale_shift(self, u1, cond):
    s, t = jnp.split(self.net(_with_cond(u1, cond, self.cond_dim)), 2, -1)
    return soft_clamp(s, self.clamp), t

  def __call__(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    u1, u2 = jnp.split(v, [self.split[0]], axis=-1)
    s, t = self._scale_shift(u1, cond)
    return jnp.concatenate([u1, u2 * jnp.exp(s) + t], -1), s.sum(-1)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    v1, v2 = jnp.split(v, [self.split[0]], axis=-1)
    s, t = self._scale_shift(v1, cond)
    return jnp.concatenate([v1, (v2 - t) * jnp.exp(-s)], -1), -s.sum(-1)


class SplineCoupling(_Coupling):
  """Rational-quadratic spline coupling (Durkan et al. 2019).

  The second half is moved elementwise by a monotone rational-quadratic
  spline on [-bound, bound] (identity outside) whose knots come from a subnet
  of the first half. The elementwise transform is distrax's
  `RationalQuadraticSpline`; zero subnet outputs give the identity.

  Attributes:
    num_bins: number of spline segments.
    bound: half-width of the interval where the spline acts.
  """

  num_bins: int = 8
  bound: float = 3.0

  def setup(self):
    self.net = self._subnet(self.split[1] * (3 * self.num_bins + 1), 'net')

  def _spline(self, u1, cond):
    n, d2 = u1.shape[0], self.split[1]
    knots = self.net(_with_cond(u1, cond, self.cond_dim))
    knots = knots.reshape(n, d2, 3 * self.num_bins + 1)
    return distrax.RationalQuadraticSpline(
        knots, range_min=-self.bound, range_max=self.bound,
        boundary_slopes='identity')

  def __call__(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    u1, u2 = jnp.split(v, [self.split[0]], axis=-1)
    v2, log_det = self._spline(u1, cond).forward_and_log_det(u2)
    return jnp.concatenate([u1, v2], -1), log_det.sum(-1)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    _check_width(v, self.dim, type(self).__name__)
    v1, v2 = jnp.split(v, [self.split[0]], axis=-1)
    u2, log_det = self._spline(v1, cond).inverse_and_log_det(v2)
    return jnp.concatenate([v1, u2], -1), log_det.sum(-1)


class Permutation(nn.Module):
  """Fixed random permutation of the columns; log_det = 0.

  The permutation is a constant drawn from `seed` when the module is built
  (not a parameter), so the same seed always gives the same network.
  """

  dim: int
  seed: int = 0

  @property
  def indices(self) -> np.ndarray:
    """(dim,) the permutation: out[:, i] = v[:, indices[i]]."""
    return np.random.default_rng(self.seed).permutation(self.dim)

  def __call__(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_width(v, self.dim, 'Permutation')
    return v[:, self.indices], jnp.zeros(v.shape[:1], v.dtype)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_width(v, self.dim, 'Permutation')
    return v[:, np.argsort(self.indices)], jnp.zeros(v.shape[:1], v.dtype)


class ActNorm(nn.Module):
  """Learned per-column affine map v * exp(log_scale) + bias (Glow).

  Starts as the identity (zeros); it is not data-initialized, which keeps
  `init` a pure function of the key and the input shape.
  """

  dim: int

  def setup(self):
    self.log_scale = self.param('log_scale', nn.initializers.zeros,
                                (self.dim,))
    self.bias = self.param('bias', nn.initializers.zeros, (self.dim,))

  def __call__(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_width(v, self.dim, 'ActNorm')
    out = v * jnp.exp(self.log_scale)[None, :] + self.bias[None, :]
    return out, jnp.full(v.shape[:1], self.log_scale.sum(), v.dtype)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_width(v, self.dim, 'ActNorm')
    out = (v - self.bias[None, :]) * jnp.exp(-self.log_scale)[None, :]
    return out, jnp.full(v.shape[:1], -self.log_scale.sum(), v.dtype)


class INN(nn.Module):
  """Invertible network f: x (zero-padded) <-> [y, z, pad].

  A stack of `num_blocks` x ([ActNorm] -> coupling -> fixed permutation) on
  rows of width `width = max(x_dim, y_dim + z_dim, min_width)`. Data enter the forward
  direction as `pad_x(x)`; the output is split by `split_output` into the
  property block y (y_dim), the latent block z (z_dim) and the remaining
  padding. With `cond_dim > 0` every subnet also sees a condition (cINN; use
  `y_dim=0`, `z_dim=x_dim` to map x <-> z given y).

  Attributes:
    x_dim: D, design parameters.
    y_dim: M, properties read off the first output columns.
    z_dim: K, latent columns following y.
    min_width: pad rows to at least this width (0: no extra padding); the
      output columns after y and z are then padding.
    num_blocks: number of coupling blocks.
    hidden: subnet width.
    depth: Dense layers per subnet.
    activation: subnet activation name.
    coupling: 'glow' (default), 'realnvp' or 'spline'.
    clamp: soft-clamp of the affine log-scales.
    num_bins / spline_bound: spline coupling settings.
    cond_dim: condition width (0 for an unconditional INN).
    actnorm: put an ActNorm before every coupling.
    permute_seed: seed of the fixed permutations (block i uses seed + i).
    final_init_scale: see `MLP`; 0 makes every coupling start as identity.
  """

  x_dim: int
  y_dim: int
  z_dim: int
  min_width: int = 0
  num_blocks: int = 4
  hidden: int = 128
  depth: int = 3
  activation: str = 'relu'
  coupling: str = 'glow'
  clamp: float = 2.0
  num_bins: int = 8
  spline_bound: float = 3.0
  cond_dim: int = 0
  actnorm: bool = False
  permute_seed: int = 0
  final_init_scale: float = 0.0

  @property
  def width(self) -> int:
    """Row width inside the network: max(x_dim, y_dim + z_dim, min_width)."""
    return max(self.x_dim, self.y_dim + self.z_dim, self.min_width)

  def _validate(self) -> None:
    for name in ('x_dim', 'num_blocks', 'hidden', 'depth'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    for name in ('y_dim', 'z_dim', 'cond_dim', 'min_width'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    if self.width < 2:
      raise ValueError(
          f'an INN needs a width of at least 2, got {self.width}')
    if self.coupling not in COUPLINGS:
      raise ValueError(
          f'unknown coupling {self.coupling!r}; expected one of {COUPLINGS}')
    get_activation(self.activation)
    if self.clamp <= 0:
      raise ValueError(f'clamp must be > 0, got {self.clamp}')

  def setup(self):
    self._validate()
    subnet = dict(dim=self.width, hidden=self.hidden, depth=self.depth,
                  activation=self.activation, cond_dim=self.cond_dim,
                  final_init_scale=self.final_init_scale)
    layers = []
    for i in range(self.num_blocks):
      if self.actnorm:
        layers.append(ActNorm(self.width, name=f'actnorm_{i}'))
      if self.coupling == 'glow':
        block = GlowCoupling(clamp=self.clamp, name=f'coupling_{i}', **subnet)
      elif self.coupling == 'realnvp':
        block = AffineCoupling(clamp=self.clamp, name=f'coupling_{i}',
                               **subnet)
      else:
        block = SplineCoupling(num_bins=self.num_bins, bound=self.spline_bound,
                               name=f'coupling_{i}', **subnet)
      layers.append(block)
      layers.append(Permutation(self.width, self.permute_seed + i,
                                name=f'permute_{i}'))
    self.layers = layers

  def __call__(self, v: Array, cond: Optional[Array] = None):
    """Forward pass: (n, width) -> ((n, width), log_det (n,))."""
    _check_width(v, self.width, 'INN')
    log_det = jnp.zeros(v.shape[:1], v.dtype)
    for layer in self.layers:
      v, ld = layer(v, cond)
      log_det = log_det + ld
    chex.assert_shape([v, log_det], [(v.shape[0], self.width), (v.shape[0],)])
    return v, log_det

  def inverse(self, v: Array, cond: Optional[Array] = None):
    """Inverse pass: (n, width) -> ((n, width), log_det (n,))."""
    _check_width(v, self.width, 'INN.inverse')
    log_det = jnp.zeros(v.shape[:1], v.dtype)
    for layer in reversed(self.layers):
      v, ld = layer.inverse(v, cond)
      log_det = log_det + ld
    return v, log_det

  # Padding helpers: plain functions of the attributes, no parameters.

  def pad_x(self, x: Array) -> Array:
    """(n, x_dim) designs -> (n, width) network input (zero padding)."""
    _check_width(x, self.x_dim, 'INN.pad_x')
    return _pad_columns(x, self.width)

  def join_yz(self, y: Array, z: Array) -> Array:
    """(n, y_dim), (n, z_dim) -> (n, width) inverse input (zero padding)."""
    _check_width(y, self.y_dim, 'INN.join_yz (y)')
    _check_width(z, self.z_dim, 'INN.join_yz (z)')
    return _pad_columns(jnp.concatenate([y, z], -1), self.width)

  def split_output(self, out: Array) -> tuple[Array, Array, Array]:
    """(n, width) forward output -> y (n, y_dim), z (n, z_dim), pad (rest)."""
    _check_width(out, self.width, 'INN.split_output')
    return tuple(jnp.split(out, [self.y_dim, self.y_dim + self.z_dim], -1))

  def split_input(self, v: Array) -> tuple[Array, Array]:
    """(n, width) inverse output -> x (n, x_dim), pad (n, width - x_dim)."""
    _check_width(v, self.width, 'INN.split_input')
    return tuple(jnp.split(v, [self.x_dim], -1))


def _pad_columns(v: Array, width: int) -> Array:
  return jnp.pad(v, ((0, 0), (0, width - v.shape[-1])))


def conditional_inn(x_dim: int, cond_dim: int, **kwargs) -> INN:
  """A cINN mapping x (n, x_dim) <-> z (n, x_dim) given a condition y."""
  if cond_dim < 1:
    raise ValueError(f'a conditional INN needs cond_dim >= 1, got {cond_dim}')
  return INN(x_dim=x_dim, y_dim=0, z_dim=x_dim, cond_dim=cond_dim, **kwargs)


def num_params(params) -> int:
  """Total number of scalars in a parameter pytree."""
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


__all__: Sequence[str] = (
    'AffineCoupling', 'ActNorm', 'COUPLINGS', 'GlowCoupling', 'INN', 'MLP',
    'Permutation', 'SplineCoupling', 'conditional_inn', 'get_activation',
    'num_params', 'soft_clamp')
