"""Invertible building blocks on images, and a multi-scale image INN.

Images are NHWC arrays of shape (n, h, w, c). Every block follows the
convention of `ipage_jax.flows`:

  out, log_det = block.apply(variables, v, cond)                    # forward
  v, log_det = block.apply(variables, out, cond, method='inverse')  # inverse

with `log_det` of shape (n,) and the inverse returning the log-determinant
of the inverse map. Subnets are small CNNs (`ConvNet`) whose convolutions use
circular (periodic) padding, so a coupling commutes with periodic shifts of
the image (by an even number of pixels for the checkerboard coupling, whose
mask is only invariant under those); their last layer starts at zero, so
every coupling starts as the identity.

`ImageINN` stacks them in the multi-scale layout of RealNVP (Dinh et al.
2017, "Density estimation using Real NVP") and Glow (Kingma & Dhariwal 2018,
"Glow: Generative flow with invertible 1x1 convolutions"): squeeze, couplings,
factor out half the channels, repeat; then a few fully connected couplings on
what is left, which see the whole image at once (a global property such as
a cell's effective modulus needs that receptive field). On flat rows it has
the same interface as `flows.INN`, so it can stand in for it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ipage_jax import flows

Array = jax.Array
_PIXEL = (None, None, None, slice(None))  # (c,) -> (1, 1, 1, c)


def _check_image(v: Array, channels: Optional[int], what: str) -> None:
  """Raises unless `v` is (n, h, w, channels) (any channels if None)."""
  if v.ndim != 4 or (channels is not None and v.shape[-1] != channels):
    want = f'(n, h, w, {"c" if channels is None else channels})'
    raise ValueError(f'{what} expects images of shape {want}, got {v.shape}')


def _with_cond(h: Array, cond: Optional[Array], cond_dim: int) -> Array:
  """Appends the (n, cond_dim) condition to (n, h, w, c) as constant maps."""
  if cond_dim == 0:
    if cond is not None:
      raise ValueError('a condition was given to an unconditional block')
    return h
  if cond is None or cond.shape != (h.shape[0], cond_dim):
    got = None if cond is None else cond.shape
    raise ValueError(
        f'condition of shape ({h.shape[0]}, {cond_dim}) required, got {got}')
  maps = jnp.broadcast_to(cond[:, None, None, :], h.shape[:3] + (cond_dim,))
  return jnp.concatenate([h, maps.astype(h.dtype)], axis=-1)


def _check_positive(obj, names: Sequence[str], minimum: int = 1) -> None:
  for name in names:
    if getattr(obj, name) < minimum:
      raise ValueError(
          f'{name} must be >= {minimum}, got {getattr(obj, name)}')


class ConvNet(nn.Module):
  """Coupling subnet: conv k x k -> act -> conv 1 x 1 -> act -> conv k x k.

  The k x k convolutions pad circularly (periodic boundary conditions), so
  the map commutes with `jnp.roll` over the two spatial axes.

  Attributes:
    hidden: channels of the two hidden layers.
    out_channels: output channels.
    kernel_size: odd side k of the spatial kernels.
    activation: name of the hidden activation (see `flows.get_activation`).
    final_init_scale: std of the last layer's weights at init; 0 gives
      exactly zero outputs, so a coupling starts as the identity.
  """

  hidden: int
  out_channels: int
  kernel_size: int = 3
  activation: str = 'relu'
  final_init_scale: float = 0.0

  @nn.compact
  def __call__(self, h: Array) -> Array:
    """(n, h, w, c_in) -> (n, h, w, out_channels)."""
    _check_positive(self, ('hidden', 'out_channels', 'kernel_size'))
    if self.kernel_size % 2 == 0:
      raise ValueError(f'kernel_size must be odd, got {self.kernel_size}')
    _check_image(h, None, 'ConvNet')
    act = flows.get_activation(self.activation)
    k = (self.kernel_size, self.kernel_size)
    h = act(nn.Conv(self.hidden, k, padding='CIRCULAR')(h))
    h = act(nn.Conv(self.hidden, (1, 1))(h))
    if self.final_init_scale > 0:
      kernel_init = nn.initializers.normal(self.final_init_scale)
    else:
      kernel_init = nn.initializers.zeros
    return nn.Conv(self.out_channels, k, padding='CIRCULAR',
                   kernel_init=kernel_init)(h)


class _ImageCoupling(nn.Module):
  """Shared attributes of the image couplings.

  Attributes:
    channels: c, channels of the images transformed.
    hidden: hidden channels of the subnets (`ConvNet`).
    kernel_size: odd spatial kernel size of the subnets.
    activation: subnet activation name.
    clamp: soft clamp of the log-scales (`flows.soft_clamp`).
    cond_dim: width of the condition fed to every subnet as constant
      channels (0: none).
    final_init_scale: see `ConvNet`; 0 makes the coupling start as identity.
  """

  channels: int
  hidden: int = 16
  kernel_size: int = 3
  activation: str = 'relu'
  clamp: float = 2.0
  cond_dim: int = 0
  final_init_scale: float = 0.0

  def _subnet(self, out_channels: int, name: str) -> ConvNet:
    if self.clamp <= 0:
      raise ValueError(f'clamp must be > 0, got {self.clamp}')
    if self.cond_dim < 0:
      raise ValueError(f'cond_dim must be >= 0, got {self.cond_dim}')
    return ConvNet(self.hidden, out_channels, self.kernel_size,
                   self.activation, self.final_init_scale, name=name)

  def _scale_shift(self, net, h, cond):
    s, t = jnp.split(net(_with_cond(h, cond, self.cond_dim)), 2, axis=-1)
    return flows.soft_clamp(s, self.clamp), t


def checkerboard(h: int, w: int, parity: int) -> np.ndarray:
  """(h, w, 1) float mask, 1 where (i + j) % 2 == parity (the kept pixels)."""
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  return ((i + j) % 2 == parity).astype(np.float32)[..., None]


class CheckerboardCoupling(_ImageCoupling):
  """Affine coupling with a checkerboard mask (RealNVP).

  With b the mask of `checkerboard(h, w, parity)` (the kept pixels):
  out = b * v + (1 - b) * (v * exp(c(s(b * v))) + t(b * v)), with c the soft
  clamp and (s, t) from one `ConvNet`. Commutes with periodic shifts by an
  even number of pixels (odd shifts swap the two halves of the mask).

  Attributes:
    parity: 0 or 1, which pixels are kept; alternate it between blocks.
  """

  parity: int = 0

  def setup(self):
    _check_positive(self, ('channels',))
    if self.parity not in (0, 1):
      raise ValueError(f'parity must be 0 or 1, got {self.parity}')
    self.net = self._subnet(2 * self.channels, 'net')

  def _affine(self, v, cond):
    """Log-scale and shift, both zero on the kept pixels (which therefore
    pass through exactly: v * exp(0) + 0 = v)."""
    b = jnp.asarray(checkerboard(v.shape[1], v.shape[2], self.parity)[None],
                    v.dtype)  # (1, h, w, 1)
    s, t = self._scale_shift(self.net, v * b, cond)
    return s * (1 - b), t * (1 - b)

  def __call__(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    _check_image(v, self.channels, 'CheckerboardCoupling')
    s, t = self._affine(v, cond)
    return v * jnp.exp(s) + t, s.sum((1, 2, 3))

  def inverse(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    _check_image(v, self.channels, 'CheckerboardCoupling.inverse')
    s, t = self._affine(v, cond)
    return (v - t) * jnp.exp(-s), -s.sum((1, 2, 3))


class ChannelCoupling(_ImageCoupling):
  """GLOW-style affine coupling between two halves of the channels.

  With u = [u1 (c // 2 channels), u2 (the rest)]:
  v1 = u1 * exp(c(s2(u2))) + t2(u2);  v2 = u2 * exp(c(s1(v1))) + t1(v1),
  as `flows.GlowCoupling` with `ConvNet` subnets. Commutes with every
  periodic shift.
  """

  def setup(self):
    if self.channels < 2:
      raise ValueError(
          f'a channel coupling needs channels >= 2, got {self.channels}')
    c1 = self.channels // 2
    self.split = (c1, self.channels - c1)
    self.net1 = self._subnet(2 * self.split[1], 'net1')  # v1 -> moves u2
    self.net2 = self._subnet(2 * c1, 'net2')  # u2 -> moves u1

  def __call__(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    _check_image(v, self.channels, 'ChannelCoupling')
    u1, u2 = jnp.split(v, [self.split[0]], axis=-1)
    s2, t2 = self._scale_shift(self.net2, u2, cond)
    v1 = u1 * jnp.exp(s2) + t2
    s1, t1 = self._scale_shift(self.net1, v1, cond)
    v2 = u2 * jnp.exp(s1) + t1
    return (jnp.concatenate([v1, v2], -1),
            s1.sum((1, 2, 3)) + s2.sum((1, 2, 3)))

  def inverse(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    _check_image(v, self.channels, 'ChannelCoupling.inverse')
    v1, v2 = jnp.split(v, [self.split[0]], axis=-1)
    s1, t1 = self._scale_shift(self.net1, v1, cond)
    u2 = (v2 - t1) * jnp.exp(-s1)
    s2, t2 = self._scale_shift(self.net2, u2, cond)
    u1 = (v1 - t2) * jnp.exp(-s2)
    return (jnp.concatenate([u1, u2], -1),
            -(s1.sum((1, 2, 3)) + s2.sum((1, 2, 3))))


def squeeze(v: Array) -> Array:
  """Space-to-depth 2 x 2: (n, h, w, c) -> (n, h / 2, w / 2, 4 c).

  Output channel (2 a + b) * c + k holds pixel (2 i + a, 2 j + b), channel k.
  """
  _check_image(v, None, 'squeeze')
  n, h, w, c = v.shape
  if h % 2 or w % 2:
    raise ValueError(f'squeeze needs even height and width, got {h} x {w}')
  v = v.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return v.reshape(n, h // 2, w // 2, 4 * c)


def unsqueeze(v: Array) -> Array:
  """Depth-to-space 2 x 2, the inverse of `squeeze`: (n, h, w, 4 c) ->
  (n, 2 h, 2 w, c)."""
  _check_image(v, None, 'unsqueeze')
  n, h, w, c4 = v.shape
  if c4 % 4:
    raise ValueError(f'unsqueeze needs channels divisible by 4, got {c4}')
  v = v.reshape(n, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
  return v.reshape(n, 2 * h, 2 * w, c4 // 4)


class Squeeze(nn.Module):
  """`squeeze` as a block: (n, h, w, c) -> (n, h / 2, w / 2, 4 c); log_det 0.

  A periodic shift by 2 pixels becomes a shift by 1 of the squeezed image.
  """

  def __call__(self, v: Array, cond: Optional[Array] = None):
    del cond
    out = squeeze(v)
    return out, jnp.zeros(v.shape[:1], v.dtype)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    del cond
    out = unsqueeze(v)
    return out, jnp.zeros(v.shape[:1], v.dtype)


class ActNorm(nn.Module):
  """Per-channel affine map v * exp(log_scale) + bias on images (Glow).

  Starts as the identity (zeros), not data-initialized; log_det is
  h * w * sum(log_scale).

  Attributes:
    channels: c, channels of the (n, h, w, c) images.
  """

  channels: int

  def setup(self):
    _check_positive(self, ('channels',))
    self.log_scale = self.param('log_scale', nn.initializers.zeros,
                                (self.channels,))
    self.bias = self.param('bias', nn.initializers.zeros, (self.channels,))

  def _log_det(self, v, sign):
    pixels = v.shape[1] * v.shape[2]
    return jnp.full(v.shape[:1], sign * pixels * self.log_scale.sum(), v.dtype)

  def __call__(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    del cond
    _check_image(v, self.channels, 'ActNorm')
    out = v * jnp.exp(self.log_scale)[_PIXEL] + self.bias[_PIXEL]
    return out, self._log_det(v, 1.0)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    """(n, h, w, c) -> ((n, h, w, c), log_det (n,))."""
    del cond
    _check_image(v, self.channels, 'ActNorm.inverse')
    out = (v - self.bias[_PIXEL]) * jnp.exp(-self.log_scale)[_PIXEL]
    return out, self._log_det(v, -1.0)


class ChannelPermutation(nn.Module):
  """Fixed random permutation of the channels (same at every pixel).

  A constant drawn from `seed` when the module is built, as
  `flows.Permutation`; log_det = 0.

  Attributes:
    channels: c, channels of the (n, h, w, c) images.
    seed: seed of the permutation.
  """

  channels: int
  seed: int = 0

  @property
  def indices(self) -> np.ndarray:
    """(channels,) the permutation: out[..., i] = v[..., indices[i]]."""
    return np.random.default_rng(self.seed).permutation(self.channels)

  def __call__(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_image(v, self.channels, 'ChannelPermutation')
    return v[..., self.indices], jnp.zeros(v.shape[:1], v.dtype)

  def inverse(self, v: Array, cond: Optional[Array] = None):
    del cond
    _check_image(v, self.channels, 'ChannelPermutation.inverse')
    return v[..., np.argsort(self.indices)], jnp.zeros(v.shape[:1], v.dtype)


class ImageINN(nn.Module):
  """Multi-scale INN on images with the flat-row interface of `flows.INN`.

  Rows of width `width = x_dim = h * w * c` are images flattened in
  row-major (h, w, c) order. Each of the `levels` levels does

    Squeeze                        (n, h', w', c') -> (n, h'/2, w'/2, 4 c')
    blocks_per_level x [ActNorm -> coupling -> ChannelPermutation]
    factor out the last 2 c' channels (to the output), keep the first 2 c'

  (see `level_shapes`); the kept (n, h / 2**L, w / 2**L, c * 2**L) tensor is
  flattened to dense_dim = x_dim / 2**L columns (L = levels) and goes through
  dense_blocks x [flows.GlowCoupling (flows.MLP subnets) -> flows.Permutation].

  Within a level, block b is a `CheckerboardCoupling` for even b (parity
  (b // 2) % 2, so the parities alternate) and a `ChannelCoupling` for odd b.

  Output row (fixed order): [dense part (dense_dim), factored-out part of
  the deepest level, ..., factored-out part of level 1], each part flattened
  row-major (h, w, c). y is the first `y_dim` columns (of the dense part, so
  it can depend on the whole image), z all the other x_dim - y_dim columns,
  and there is no padding.

  Attributes:
    image_shape: (h, w, c) of the images; h and w divisible by 2**levels.
    y_dim: M, properties read off the first output columns (<= dense_dim).
    levels: number of squeeze / factor-out levels (>= 1).
    blocks_per_level: couplings per level (>= 1).
    hidden_channels: hidden channels of the `ConvNet` subnets.
    kernel_size: odd spatial kernel size of the subnets.
    activation: subnet activation name (conv and dense subnets).
    clamp: soft clamp of every affine log-scale.
    dense_blocks: fully connected couplings after the last level (>= 0).
    dense_hidden: width of their `flows.MLP` subnets.
    dense_depth: Dense layers per MLP subnet.
    permute_seed: seed of the fixed permutations (each gets its own offset).
    cond_dim: condition width fed to every subnet (0 for none).
    final_init_scale: std of every subnet's last layer at init; 0 makes the
      whole net start as a fixed permutation of the columns.
  """

  image_shape: tuple[int, int, int]
  y_dim: int
  levels: int = 1
  blocks_per_level: int = 4
  hidden_channels: int = 16
  kernel_size: int = 3
  activation: str = 'relu'
  clamp: float = 2.0
  dense_blocks: int = 2
  dense_hidden: int = 64
  dense_depth: int = 3
  permute_seed: int = 0
  cond_dim: int = 0
  final_init_scale: float = 0.0

  # Sizes: plain functions of the attributes, no parameters.

  @property
  def x_dim(self) -> int:
    """D = h * w * c."""
    h, w, c = self.image_shape
    return h * w * c

  @property
  def z_dim(self) -> int:
    """K = x_dim - y_dim latent columns."""
    return self.x_dim - self.y_dim

  @property
  def width(self) -> int:
    """Row width inside the network: x_dim (no padding)."""
    return self.x_dim

  @property
  def dense_dim(self) -> int:
    """Columns left after the last factor-out: x_dim / 2**levels."""
    return self.x_dim // 2 ** self.levels

  def level_shapes(self) -> list[tuple[int, int, int]]:
    """(h, w, c) of the image inside each level, after its squeeze."""
    h, w, c = self.image_shape
    shapes = []
    for _ in range(self.levels):
      h, w, c = h // 2, w // 2, 4 * c
      shapes.append((h, w, c))
      c //= 2
    return shapes

  def _validate(self) -> None:
    shape = self.image_shape
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
        or min(shape) < 1):
      raise ValueError(
          f'image_shape must be (h, w, c) with sizes >= 1, got '
          f'{self.image_shape}')
    _check_positive(self, ('levels', 'blocks_per_level', 'hidden_channels',
                           'kernel_size', 'dense_hidden', 'dense_depth'))
    _check_positive(self, ('y_dim', 'dense_blocks', 'cond_dim'), minimum=0)
    h, w, _ = self.image_shape
    if h % 2 ** self.levels or w % 2 ** self.levels:
      raise ValueError(
          f'image height and width must be divisible by 2**levels = '
          f'{2 ** self.levels}, got {h} x {w}')
    if self.kernel_size % 2 == 0:
      raise ValueError(f'kernel_size must be odd, got {self.kernel_size}')
    if self.y_dim > self.dense_dim:
      raise ValueError(
          f'y_dim={self.y_dim} must be <= the {self.dense_dim} columns left '
          f'after {self.levels} levels (x_dim / 2**levels)')
    flows.get_activation(self.activation)
    if self.clamp <= 0:
      raise ValueError(f'clamp must be > 0, got {self.clamp}')

  def __post_init__(self):
    # Checked on construction: the size properties need valid attributes.
    self._validate()
    super().__post_init__()

  def setup(self):
    conv = dict(hidden=self.hidden_channels, kernel_size=self.kernel_size,
                activation=self.activation, clamp=self.clamp,
                cond_dim=self.cond_dim,
                final_init_scale=self.final_init_scale)
    seed = self.permute_seed
    levels = []
    for level, (_, _, c) in enumerate(self.level_shapes()):
      layers = [Squeeze(name=f'squeeze_{level}')]
      for b in range(self.blocks_per_level):
        tag = f'{level}_{b}'
        layers.append(ActNorm(c, name=f'actnorm_{tag}'))
        if b % 2 == 0:
          layers.append(CheckerboardCoupling(
              channels=c, parity=(b // 2) % 2, name=f'checker_{tag}', **conv))
        else:
          layers.append(ChannelCoupling(channels=c, name=f'channel_{tag}',
                                        **conv))
        layers.append(ChannelPermutation(c, seed, name=f'permute_{tag}'))
        seed += 1
      levels.append(layers)
    self.conv_levels = levels
    dense = []
    for i in range(self.dense_blocks):
      dense.append(flows.GlowCoupling(
          dim=self.dense_dim, hidden=self.dense_hidden,
          depth=self.dense_depth, activation=self.activation,
          cond_dim=self.cond_dim, final_init_scale=self.final_init_scale,
          clamp=self.clamp, name=f'dense_coupling_{i}'))
      dense.append(flows.Permutation(self.dense_dim, seed,
                                     name=f'dense_permute_{i}'))
      seed += 1
    self.dense_layers = dense

  def __call__(self, v: Array, cond: Optional[Array] = None):
    """Forward pass: (n, width) -> ((n, width), log_det (n,))."""
    _check_width(v, self.width, 'ImageINN')
    n = v.shape[0]
    log_det = jnp.zeros((n,), v.dtype)
    h = v.reshape((n,) + tuple(self.image_shape))
    factored = []
    for layers in self.conv_levels:
      for layer in layers:
        h, ld = layer(h, cond)
        log_det = log_det + ld
      h, out = jnp.split(h, 2, axis=-1)
      factored.append(out.reshape(n, -1))
    h = h.reshape(n, -1)
    for layer in self.dense_layers:
      h, ld = layer(h, cond)
      log_det = log_det + ld
    out = jnp.concatenate([h] + factored[::-1], axis=-1)
    chex.assert_shape([out, log_det], [(n, self.width), (n,)])
    return out, log_det

  def inverse(self, v: Array, cond: Optional[Array] = None):
    """Inverse pass: (n, width) -> ((n, width), log_det (n,))."""
    _check_width(v, self.width, 'ImageINN.inverse')
    n = v.shape[0]
    log_det = jnp.zeros((n,), v.dtype)
    shapes = self.level_shapes()
    sizes = [self.dense_dim] + [h * w * c // 2 for h, w, c in shapes[::-1]]
    parts = jnp.split(v, np.cumsum(sizes)[:-1].tolist(), axis=-1)
    h = parts[0]
    for layer in reversed(self.dense_layers):
      h, ld = layer.inverse(h, cond)
      log_det = log_det + ld
    for (hl, wl, cl), part, layers in zip(shapes[::-1], parts[1:],
                                          self.conv_levels[::-1]):
      kept = h.reshape(n, hl, wl, cl // 2)
      h = jnp.concatenate([kept, part.reshape(n, hl, wl, cl // 2)], -1)
      for layer in reversed(layers):
        h, ld = layer.inverse(h, cond)
        log_det = log_det + ld
    return h.reshape(n, self.width), log_det

  # Row helpers as in `flows.INN` (no padding here: width = x_dim).

  def pad_x(self, x: Array) -> Array:
    """(n, x_dim) designs -> (n, width) network input (unchanged)."""
    _check_width(x, self.x_dim, 'ImageINN.pad_x')
    return x

  def join_yz(self, y: Array, z: Array) -> Array:
    """(n, y_dim), (n, z_dim) -> (n, width) inverse input."""
    _check_width(y, self.y_dim, 'ImageINN.join_yz (y)')
    _check_width(z, self.z_dim, 'ImageINN.join_yz (z)')
    return jnp.concatenate([y, z], -1)

  def split_output(self, out: Array) -> tuple[Array, Array, Array]:
    """(n, width) forward output -> y (n, y_dim), z (n, z_dim), pad (n, 0)."""
    _check_width(out, self.width, 'ImageINN.split_output')
    return tuple(jnp.split(out, [self.y_dim, self.width], -1))

  def split_input(self, v: Array) -> tuple[Array, Array]:
    """(n, width) inverse output -> x (n, x_dim), pad (n, 0)."""
    _check_width(v, self.width, 'ImageINN.split_input')
    return tuple(jnp.split(v, [self.x_dim], -1))


def _check_width(v: Array, dim: int, what: str) -> None:
  if v.ndim != 2 or v.shape[-1] != dim:
    raise ValueError(f'{what} expects input of shape (n, {dim}), got {v.shape}')


__all__: Sequence[str] = (
    'ActNorm', 'ChannelCoupling', 'ChannelPermutation', 'CheckerboardCoupling',
    'ConvNet', 'ImageINN', 'Squeeze', 'checkerboard', 'squeeze', 'unsqueeze')
