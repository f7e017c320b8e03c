"""PyTorch reference of the GLOW INN and its bi-directional losses.

Used by the speed comparisons in `experiments/perf` (optional extra
`[torch]`). The network is built from the parameters of a JAX
`ipage_jax.flows.INN`, so both frameworks compute the same function:

  model = build_inn(inn, params)          # impl 'freia' or 'plain'
  out = model(v)                          # (n, width) -> (n, width)
  v = model.inverse(out)
  loss_fn = make_inn_objective(inn, widths=(0.2, 0.5, 0.9, 1.3))
  loss, aux = loss_fn(model, x, y)        # same terms as ipage_jax.losses

Two implementations of the GLOW block: 'freia' stacks
`FrEIA.modules.GLOWCouplingBlock` (the package of the original iPage code,
`pip install freia`) with a fixed permutation; 'plain' is the same block in
plain PyTorch. 'auto' takes FrEIA when it imports. Only unconditional GLOW
INNs without ActNorm are supported; the log-determinant is not returned
(the MMD objective does not use it).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import numpy as np
import torch
from torch import nn

from ipage_jax import flows

Tensor = torch.Tensor

# Torch counterparts of `ipage_jax.flows.get_activation` (flax's gelu is the
# tanh approximation; its leaky_relu slope is 0.01).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    'relu': nn.ReLU,
    'leaky_relu': lambda: nn.LeakyReLU(0.01),
    'tanh': nn.Tanh,
    'gelu': lambda: nn.GELU(approximate='tanh'),
    'silu': nn.SiLU,
    'elu': nn.ELU,
}
IMPLS = ('auto', 'freia', 'plain')


def freia_available() -> bool:
  """True when the FrEIA package imports."""
  try:
    import FrEIA.framework  # pylint: disable=g-import-not-at-top,unused-import
    import FrEIA.modules  # noqa: F401  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return True


def resolve_impl(impl: str) -> str:
  """'auto' -> 'freia' if it imports, else 'plain'; checks the name."""
  if impl not in IMPLS:
    raise ValueError(f'unknown impl {impl!r}; expected one of {IMPLS}')
  if impl == 'auto':
    return 'freia' if freia_available() else 'plain'
  if impl == 'freia' and not freia_available():
    raise ValueError("impl='freia' needs the FrEIA package (pip install freia)")
  return impl


def _soft_clamp(s: Tensor, clamp: float) -> Tensor:
  """clamp * 2/pi * atan(s / clamp), as `ipage_jax.flows.soft_clamp`."""
  return clamp * (2.0 / math.pi) * torch.atan(s / clamp)


def _linear(dense: dict) -> nn.Linear:
  """nn.Linear holding a flax Dense's kernel (in, out) and bias."""
  kernel = np.array(dense['kernel'], np.float32)
  layer = nn.Linear(*kernel.shape)
  with torch.no_grad():
    layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
    layer.bias.copy_(torch.from_numpy(np.array(dense['bias'], np.float32)))
  return layer


def _subnet(tree: dict, depth: int, activation: str) -> nn.Sequential:
  """The torch twin of a `flows.MLP` with parameters `tree`."""
  layers = []
  for j in range(depth):
    layers.append(_linear(tree[f'Dense_{j}']))
    if j < depth - 1:
      layers.append(_ACTIVATIONS[activation]())
  return nn.Sequential(*layers)


class _PlainGlow(nn.Module):
  """One GLOW coupling followed by a fixed permutation, plain PyTorch."""

  def __init__(self, net1: nn.Module, net2: nn.Module, perm: np.ndarray,
               clamp: float):
    super().__init__()
    self.net1, self.net2, self.clamp = net1, net2, clamp
    self.d1 = len(perm) // 2
    self.register_buffer('perm', torch.from_numpy(perm.astype(np.int64)))
    self.register_buffer('perm_inv',
                         torch.from_numpy(np.argsort(perm).astype(np.int64)))

  def _scale_shift(self, net, h):
    s, t = net(h).chunk(2, dim=1)
    return _soft_clamp(s, self.clamp), t

  def forward(self, v: Tensor) -> Tensor:
    u1, u2 = v[:, :self.d1], v[:, self.d1:]
    s2, t2 = self._scale_shift(self.net2, u2)
    v1 = u1 * torch.exp(s2) + t2
    s1, t1 = self._scale_shift(self.net1, v1)
    v2 = u2 * torch.exp(s1) + t1
    return torch.cat([v1, v2], dim=1)[:, self.perm]

  def inverse(self, v: Tensor) -> Tensor:
    v = v[:, self.perm_inv]
    v1, v2 = v[:, :self.d1], v[:, self.d1:]
    s1, t1 = self._scale_shift(self.net1, v1)
    u2 = (v2 - t1) * torch.exp(-s1)
    s2, t2 = self._scale_shift(self.net2, u2)
    u1 = (v1 - t2) * torch.exp(-s2)
    return torch.cat([u1, u2], dim=1)


class TorchINN(nn.Module):
  """The INN in PyTorch: `forward` and `inverse` map (n, width) rows.

  Attributes:
    impl: 'freia' or 'plain'.
    width: row width.
  """

  def __init__(self, body: nn.Module, impl: str, width: int):
    super().__init__()
    self.body, self.impl, self.width = body, impl, width

  def forward(self, v: Tensor) -> Tensor:
    if self.impl == 'freia':
      return self.body(v, jac=False)[0]
    for block in self.body:
      v = block(v)
    return v

  def inverse(self, v: Tensor) -> Tensor:
    if self.impl == 'freia':
      return self.body(v, rev=True, jac=False)[0]
    for block in reversed(self.body):
      v = block.inverse(v)
    return v


def _freia_body(inn, tree: dict) -> nn.Module:
  """FrEIA SequenceINN: GLOWCouplingBlock + fixed permutation per block."""
  # pylint: disable=g-import-not-at-top
  import FrEIA.framework as ff
  import FrEIA.modules as fm
  # pylint: enable=g-import-not-at-top

  class FixedPermutation(fm.InvertibleModule):
    """out[:, i] = v[:, perm[i]] with a given permutation (no RNG)."""

    def __init__(self, dims_in, dims_c=None, perm=None):
      super().__init__(dims_in, dims_c)
      self.register_buffer('perm', torch.from_numpy(perm.astype(np.int64)))
      self.register_buffer(
          'perm_inv', torch.from_numpy(np.argsort(perm).astype(np.int64)))

    def forward(self, x, rev=False, jac=True):
      del jac
      return [x[0][:, self.perm_inv if rev else self.perm]], 0.0

    def output_dims(self, input_dims):
      return input_dims

  width, clamp = inn.width, inn.clamp
  body = ff.SequenceINN(width)
  for i in range(inn.num_blocks):
    body.append(
        fm.GLOWCouplingBlock,
        subnet_constructor=lambda c_in, c_out: nn.Linear(c_in, c_out),
        clamp=clamp,
        # FrEIA scales clamp * f(s); ours is clamp * 2/pi * atan(s / clamp).
        clamp_activation=lambda s: (2.0 / math.pi) * torch.atan(s / clamp),
        split_len=width // 2)
    coupling = body[len(body) - 1]
    # subnet1 sees the first half and moves the second: our net1.
    coupling.subnet1 = _subnet(tree[f'coupling_{i}']['net1'], inn.depth,
                               inn.activation)
    coupling.subnet2 = _subnet(tree[f'coupling_{i}']['net2'], inn.depth,
                               inn.activation)
    body.append(FixedPermutation, perm=_permutation(inn, i))
  return body


def _permutation(inn, i: int) -> np.ndarray:
  """The fixed permutation of block i of `inn`."""
  return flows.Permutation(inn.width, inn.permute_seed + i).indices


def build_inn(inn, params, impl: str = 'auto') -> TorchINN:
  """A PyTorch module computing the same map as the JAX `inn` at `params`.

  Args:
    inn: an unconditional `ipage_jax.flows.INN` with GLOW couplings and no
      ActNorm.
    params: its variables (`inn.init(...)`), copied (float32).
    impl: 'freia', 'plain' or 'auto' (FrEIA when it imports).

  Returns:
    A TorchINN whose parameters require gradients (freeze them with
    `model.requires_grad_(False)` when only inputs are optimized).
  """
  if inn.coupling != 'glow' or inn.actnorm or inn.cond_dim:
    raise ValueError('the torch reference supports unconditional GLOW INNs '
                     f'without ActNorm, got coupling={inn.coupling!r}, '
                     f'actnorm={inn.actnorm}, cond_dim={inn.cond_dim}')
  if inn.activation not in _ACTIVATIONS:
    raise ValueError(f'no torch activation for {inn.activation!r}')
  impl = resolve_impl(impl)
  tree = jax.tree_util.tree_map(np.asarray, params)['params']
  if impl == 'freia':
    body = _freia_body(inn, tree)
  else:
    body = nn.ModuleList([
        _PlainGlow(
            _subnet(tree[f'coupling_{i}']['net1'], inn.depth, inn.activation),
            _subnet(tree[f'coupling_{i}']['net2'], inn.depth, inn.activation),
            _permutation(inn, i), inn.clamp)
        for i in range(inn.num_blocks)])
  return TorchINN(body, impl, inn.width)


def imq_kernel(a: Tensor, b: Tensor, widths: Sequence[float]) -> Tensor:
  """(n, d), (m, d) -> (n, m) sum_h h^2 / (h^2 + ||a - b||^2)."""
  d2 = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
      - 2.0 * a @ b.T).clamp_min(0.0)
  terms = [h * h / (h * h + d2) for h in widths]
  kernel = terms[0]
  for term in terms[1:]:
    kernel = kernel + term
  return kernel


def mmd(a: Tensor, b: Tensor, widths: Sequence[float]) -> Tensor:
  """Biased multi-scale IMQ MMD^2, as `ipage_jax.losses.mmd`."""
  return (imq_kernel(a, a, widths).mean() + imq_kernel(b, b, widths).mean()
          - 2.0 * imq_kernel(a, b, widths).mean())


class Noise(NamedTuple):
  """Standard-normal draws of one loss evaluation (unscaled).

  Attributes:
    pad_fwd: (n, width) noise for the padding of the forward input.
    y: (n, y_dim) noise added to y (times y_noise).
    z: (n, z_dim) latent prior sample.
    pad_back: (n, width) noise for the padding of the inverse input.
  """
  pad_fwd: Tensor
  y: Tensor
  z: Tensor
  pad_back: Tensor


def make_inn_objective(inn, *, widths: Sequence[float],
                       weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                       y_noise: float = 0.0, pad_noise: float = 0.0):
  """The bi-directional MMD loss of `ipage_jax.losses.make_inn_objective`.

  lam_x L_x + lam_y L_y + lam_z L_z with fixed weights: L_y the MSE of the
  forward y-block (and the padding of the output, against 0), L_z the MMD of
  [f_y(x) detached, f_z(x)] vs [y, N(0, I)], L_x the MMD of f^-1([y, z]) vs x
  plus the mean square of its padding.

  Args:
    inn: the JAX `flows.INN` (dimensions only).
    widths: MMD kernel widths.
    weights: (lam_x, lam_y, lam_z).
    y_noise: std of the noise added to y.
    pad_noise: std of the noise in zero-padding columns.

  Returns:
    loss_fn(model, x (n, x_dim), y (n, y_dim), noise=None) -> (loss, aux);
    `noise` (a `Noise`) is drawn with torch.randn when None, skipping the
    draws whose scale is zero; aux holds the tensors l_x, l_y, l_z.
  """
  x_dim, y_dim, z_dim, width = inn.x_dim, inn.y_dim, inn.z_dim, inn.width
  yz_dim = y_dim + z_dim
  lam_x, lam_y, lam_z = weights
  widths = tuple(float(h) for h in widths)

  def pad(v, noise):
    """Zero-pads v to `width`, with pad_noise * noise in the new columns."""
    cols = v.shape[1]
    if cols == width:
      return v
    if pad_noise == 0.0:
      return torch.nn.functional.pad(v, (0, width - cols))
    return torch.cat([v, pad_noise * noise[:, cols:]], dim=1)

  def draw(n, dtype):
    def randn(cols, needed):
      if not needed:
        return torch.zeros(n, cols, dtype=dtype)
      return torch.randn(n, cols, dtype=dtype)
    return Noise(pad_fwd=randn(width, pad_noise and x_dim < width),
                 y=randn(y_dim, y_noise),
                 z=randn(z_dim, True),
                 pad_back=randn(width, pad_noise and yz_dim < width))

  def loss_fn(model: TorchINN, x: Tensor, y: Tensor,
              noise: Optional[Noise] = None):
    if noise is None:
      noise = draw(x.shape[0], x.dtype)
    out = model(pad(x, noise.pad_fwd))
    y_pred, z_pred, rest = (out[:, :y_dim], out[:, y_dim:yz_dim],
                            out[:, yz_dim:])
    y_noisy = y + y_noise * noise.y if y_noise else y
    l_y = (torch.cat([y_pred, rest], 1)
           - torch.nn.functional.pad(y_noisy, (0, rest.shape[1]))
           ).square().mean()
    l_z = mmd(torch.cat([y_pred.detach(), z_pred], 1),
              torch.cat([y, noise.z], 1), widths)
    back = model.inverse(pad(torch.cat([y_noisy, noise.z], 1),
                             noise.pad_back))
    l_x = mmd(back[:, :x_dim], x, widths)
    if x_dim < width:
      l_x = l_x + back[:, x_dim:].square().mean()
    loss = lam_x * l_x + lam_y * l_y + lam_z * l_z
    return loss, dict(l_x=l_x, l_y=l_y, l_z=l_z)

  return loss_fn


__all__: Sequence[str] = ('IMPLS', 'Noise', 'TorchINN', 'build_inn',
                          'freia_available', 'imq_kernel', 'make_inn_objective',
                          'mmd', 'resolve_impl')
