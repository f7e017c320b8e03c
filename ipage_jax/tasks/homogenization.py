"""2D periodic linear-elastic homogenization of a density cell (plane stress).

A cell is an `(ny, nx)` array of densities rho in [0, 1] on a periodic grid of
unit-square bilinear (Q4) elements; row index = y, column index = x. Element
Young's modulus (SIMP-style, in units of the solid's modulus E0 = 1):

  E(rho) = e_min + rho**penalty * (1 - e_min),

Poisson ratio `nu` everywhere. For each unit macro-strain
eps0 in {(1, 0, 0), (0, 1, 0), (0, 0, 1)} (xx, yy, engineering xy) the
periodic displacement fluctuation u solves K u = -f(eps0), matrix-free
preconditioned conjugate gradients (PCG) inside `lax.while_loop`. The
effective stiffness in Voigt notation is the energy average

  C_H[i, j] = 1/(nx ny) sum_e E_e (u0_i + u_i)_e^T Ke (u0_j + u_j)_e,

where u0_i is the affine displacement of eps0_i and Ke the unit-modulus
element matrix. The effective modulus reported for a cell is
y = (1/S[0, 0] + 1/S[1, 1]) / 2 with S = inv(C_H), in units of E0.

Preconditioner: the stiffness operator of the homogeneous cell is block-
circulant, hence diagonalized by the 2D FFT into one 2x2 Hermitian block per
wavevector; inverting it gives an exact, O(N log N) preconditioner that removes
the mesh-size dependence of the condition number (bounded by the modulus
contrast). A Jacobi option is kept for comparison.

Differentiation: C_H is stationary with respect to every u_i at the solution
(K (u0_j + u_j) = 0), so dC_H/drho is the partial derivative with u held
fixed: the displacements enter C_H under `stop_gradient` and no adjoint solve
is needed (first derivatives only; exact up to the solver tolerance). The
displacement solve itself is wrapped in `lax.custom_linear_solve`, so
`homogenize(...).displacement` is differentiable too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

POISSON = 0.3
E_MIN = 1e-3
PENALTY = 3.0
TOL = 1e-4
MAX_ITER = 500
PRECONDITIONERS = ('fft', 'jacobi')

# (row, col) offsets of the local nodes 0..3 of an element: (x, y) corners
# (0, 0), (1, 0), (1, 1), (0, 1), counter-clockwise.
_CORNERS = ((0, 0), (0, 1), (1, 1), (1, 0))
# PCG also stops once ||r|| <= _NOISE_ULPS * eps * (norm of the unassembled
# element loads): below that the residual is rounding noise (a homogeneous
# cell has f = 0 exactly, but the assembled f is not exactly 0 in floats).
_NOISE_ULPS = 64.0


class Homogenization(NamedTuple):
  """Result of `homogenize` for one cell.

  Attributes:
    tensor: `(3, 3)` effective stiffness C_H (Voigt: xx, yy, engineering xy),
      units of E0.
    displacement: `(3, 2, ny, nx)` periodic zero-mean fluctuation per load
      case (component x, y at each node; node (i, j) at x = j, y = i).
    iterations: `(3,)` int32 PCG iterations per load case.
    residual: `(3,)` final relative residual ||K u + f|| / ||f|| (<= tol when
      converged; ||f|| floored at rounding level, see `_NOISE_ULPS`).
  """

  tensor: jax.Array
  displacement: jax.Array
  iterations: jax.Array
  residual: jax.Array


def plane_stress_matrix(young: float = 1.0, nu: float = POISSON) -> np.ndarray:
  """`(3, 3)` plane-stress Hooke matrix (Voigt, engineering shear)."""
  return young / (1.0 - nu * nu) * np.array(
      [[1.0, nu, 0.0], [nu, 1.0, 0.0], [0.0, 0.0, (1.0 - nu) / 2.0]]
  )


def element_stiffness(nu: float = POISSON) -> np.ndarray:
  """`(8, 8)` Q4 stiffness of a unit square, unit modulus, plane stress.

  Dofs ordered (ux, uy) per local node, nodes at (x, y) = (0, 0), (1, 0),
  (1, 1), (0, 1). 2x2 Gauss quadrature (exact for this element).
  """
  d = plane_stress_matrix(1.0, nu)
  g = np.array([0.5 - 0.5 / np.sqrt(3.0), 0.5 + 0.5 / np.sqrt(3.0)])
  nodes = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  ke = np.zeros((8, 8))
  for x in g:
    for y in g:
      # d/dx and d/dy of N_k = (1 - |x - x_k|)(1 - |y - y_k|).
      sx = 2.0 * nodes[:, 0] - 1.0
      sy = 2.0 * nodes[:, 1] - 1.0
      wx = 1.0 - np.abs(x - nodes[:, 0])
      wy = 1.0 - np.abs(y - nodes[:, 1])
      dndx, dndy = sx * wy, sy * wx
      b = np.zeros((3, 8))
      b[0, 0::2] = dndx
      b[1, 1::2] = dndy
      b[2, 0::2] = dndy
      b[2, 1::2] = dndx
      ke += 0.25 * b.T @ d @ b
  return ke


def affine_displacements() -> np.ndarray:
  """`(3, 8)` element nodal displacements of the three unit macro-strains.

  u_x = e_xx x + g_xy y / 2, u_y = g_xy x / 2 + e_yy y at the element corners.
  """
  corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  out = np.zeros((3, 8))
  for i, (exx, eyy, gxy) in enumerate(np.eye(3)):
    ux = exx * corners[:, 0] + 0.5 * gxy * corners[:, 1]
    uy = 0.5 * gxy * corners[:, 0] + eyy * corners[:, 1]
    out[i, 0::2], out[i, 1::2] = ux, uy
  return out


def interpolate_modulus(
    rho: jax.Array, *, e_min: float = E_MIN, penalty: float = PENALTY
) -> jax.Array:
  """SIMP modulus e_min + rho**penalty (1 - e_min), units of E0; same shape."""
  return e_min + jnp.power(rho, penalty) * (1.0 - e_min)


def _gather(u: jax.Array) -> jax.Array:
  """`(2, ny, nx)` nodal field -> `(8, ny, nx)` element dof vectors."""
  parts = [jnp.roll(u, (-di, -dj), axis=(1, 2)) for di, dj in _CORNERS]
  return jnp.stack(parts).reshape((8,) + u.shape[1:])


def _scatter(fe: jax.Array) -> jax.Array:
  """`(8, ny, nx)` element dof values -> `(2, ny, nx)` assembled nodal sums."""
  fe = fe.reshape((4, 2) + fe.shape[1:])
  out = jnp.roll(fe[0], _CORNERS[0], axis=(1, 2))
  for k in range(1, 4):
    out = out + jnp.roll(fe[k], _CORNERS[k], axis=(1, 2))
  return out


def _apply_stiffness(
    ke: jax.Array, modulus: jax.Array, u: jax.Array
) -> jax.Array:
  """K u for a `(2, ny, nx)` field, element moduli `(ny, nx)`."""
  fe = jnp.einsum('ab,bij->aij', ke, _gather(u)) * modulus[None]
  return _scatter(fe)


def _fourier_inverse(ke: np.ndarray, ny: int, nx: int) -> np.ndarray:
  """`(2, 2, ny, nx // 2 + 1)` inverse symbols of the unit-modulus operator.

  With numpy's FFT convention, a shift u[m + d] multiplies the transform by
  exp(+2 pi i k.d / n), so K_hat(k) = sum_{p,q} Ke[p, q] exp(2 pi i k.(d_q -
  d_p)) over local nodes p, q. The k = 0 block (rigid translations) maps to 0.
  """
  ky = np.fft.fftfreq(ny)[:, None]
  kx = np.fft.rfftfreq(nx)[None, :]
  khat = np.zeros((2, 2, ny, nx // 2 + 1), np.complex128)
  for p, (pi, pj) in enumerate(_CORNERS):
    for q, (qi, qj) in enumerate(_CORNERS):
      phase = np.exp(2j * np.pi * (ky * (qi - pi) + kx * (qj - pj)))
      for a in range(2):
        for b in range(2):
          khat[a, b] += ke[2 * p + a, 2 * q + b] * phase
  det = khat[0, 0] * khat[1, 1] - khat[0, 1] * khat[1, 0]
  det[0, 0] = 1.0
  inv = np.stack([
      np.stack([khat[1, 1], -khat[0, 1]]),
      np.stack([-khat[1, 0], khat[0, 0]]),
  ]) / det
  inv[:, :, 0, 0] = 0.0
  return inv


def _fft_preconditioner(kinv: jax.Array, r: jax.Array) -> jax.Array:
  """Applies the inverse homogeneous operator to `(2, ny, nx)`; zero mean."""
  rhat = jnp.fft.rfft2(r)
  zhat = jnp.einsum('abij,bij->aij', kinv, rhat)
  return jnp.fft.irfft2(zhat, s=r.shape[1:]).astype(r.dtype)


def _pcg(matvec, precond, b, atol, tol, max_iter):
  """PCG for one `(2, ny, nx)` right-hand side; returns (x, (iters, res)).

  Stops when ||r|| <= max(tol ||b||, atol) or after `max_iter` iterations.
  """
  bnorm = jnp.linalg.norm(b)
  target = jnp.maximum(tol * bnorm, atol)

  def safe_div(a, c):
    return a / jnp.where(c == 0, 1.0, c)

  def cond(state):
    _, _, _, _, rnorm, k = state
    return (k < max_iter) & (rnorm > target)

  def body(state):
    x, r, p, rz, _, k = state
    ap = matvec(p)
    alpha = safe_div(rz, jnp.vdot(p, ap))
    x = x + alpha * p
    r = r - alpha * ap
    z = precond(r)
    rz_new = jnp.vdot(r, z)
    p = z + safe_div(rz_new, rz) * p
    return x, r, p, rz_new, jnp.linalg.norm(r), k + 1

  z = precond(b)
  state = (jnp.zeros_like(b), b, z, jnp.vdot(b, z), jnp.linalg.norm(b),
           jnp.zeros((), jnp.int32))
  x, _, _, _, rnorm, k = jax.lax.while_loop(cond, body, state)
  x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
  # Relative to the scale the stopping rule uses: <= tol when converged.
  return x, (k, rnorm / jnp.maximum(bnorm, atol / tol))


def _check_options(e_min, penalty, nu, tol, max_iter, preconditioner):
  if not 0.0 < e_min < 1.0:
    raise ValueError(f'e_min must lie in (0, 1); got {e_min!r}')
  if not penalty >= 1.0:
    raise ValueError(f'penalty must be >= 1; got {penalty!r}')
  if not -1.0 < nu < 0.5:
    raise ValueError(f'nu must lie in (-1, 0.5); got {nu!r}')
  if not tol > 0.0:
    raise ValueError(f'tol must be positive; got {tol!r}')
  if isinstance(max_iter, bool) or not isinstance(
      max_iter, (int, np.integer)) or max_iter < 1:
    raise ValueError(f'max_iter must be a positive integer; got {max_iter!r}')
  if preconditioner not in PRECONDITIONERS:
    raise ValueError(
        f'preconditioner must be one of {PRECONDITIONERS}; got '
        f'{preconditioner!r}'
    )


def _check_cell(rho: jax.Array, min_ndim: int = 2) -> jax.Array:
  rho = jnp.asarray(rho)
  if rho.ndim < min_ndim or rho.shape[-1] < 2 or rho.shape[-2] < 2:
    raise ValueError(
        'rho must have shape (..., ny, nx) with ny, nx >= 2; got shape '
        f'{tuple(rho.shape)}'
    )
  return rho.astype(jnp.promote_types(rho.dtype, jnp.float32))


def homogenize(
    rho: jax.Array,
    *,
    e_min: float = E_MIN,
    penalty: float = PENALTY,
    nu: float = POISSON,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
    preconditioner: str = 'fft',
) -> Homogenization:
  """Effective stiffness of one periodic cell.

  Args:
    rho: `(ny, nx)` densities in [0, 1] (row = y, column = x); float32 or
      float64 (the computation runs in that precision).
    e_min: void modulus (units of E0), keeps K positive definite.
    penalty: SIMP exponent p >= 1.
    nu: Poisson ratio of the solid (and of the void).
    tol: PCG stops when ||K u + f|| <= tol ||f||.
    max_iter: PCG iteration cap per load case.
    preconditioner: 'fft' (inverse homogeneous operator) or 'jacobi'.

  Returns:
    A `Homogenization` (tensor `(3, 3)`, displacement `(3, 2, ny, nx)`,
    iterations `(3,)`, residual `(3,)`).
  """
  _check_options(e_min, penalty, nu, tol, max_iter, preconditioner)
  rho = _check_cell(rho)
  if rho.ndim != 2:
    raise ValueError(
        f'homogenize takes one (ny, nx) cell; got shape {tuple(rho.shape)} '
        '(use effective_tensor for batches)'
    )
  dtype = rho.dtype
  ny, nx = rho.shape
  ke_np = element_stiffness(nu)
  ke = jnp.asarray(ke_np, dtype)
  u0 = jnp.asarray(affine_displacements(), dtype)
  modulus = interpolate_modulus(rho, e_min=e_min, penalty=penalty)

  def matvec(u):
    return _apply_stiffness(ke, modulus, u)

  if preconditioner == 'fft':
    cdtype = jnp.promote_types(dtype, jnp.complex64)
    kinv = jnp.asarray(_fourier_inverse(ke_np, ny, nx), cdtype)

    def precond(r):
      return _fft_preconditioner(kinv, r)
  else:
    diag_e = jnp.asarray(np.diag(ke_np), dtype)[:, None, None] * modulus[None]
    inv_diag = 1.0 / _scatter(diag_e)

    def precond(r):
      return r * inv_diag

  # Element forces of the affine fields: (3, 8, ny, nx).
  fe0 = jnp.einsum('ab,lb->la', ke, u0)[:, :, None, None] * modulus[None, None]
  loads = -jax.vmap(_scatter)(fe0)
  atols = (_NOISE_ULPS * jnp.finfo(dtype).eps
           * jnp.sqrt(jnp.sum(fe0 * fe0, axis=(1, 2, 3))))

  def solve_one(b, atol):
    def solve(mv, rhs):
      return _pcg(mv, precond, rhs, atol, tol, max_iter)

    return jax.lax.custom_linear_solve(
        matvec, b, solve, symmetric=True, has_aux=True
    )

  u, (iters, res) = jax.vmap(solve_one)(loads, atols)
  # C_H = <E> C0 + <E_e (u0_i.Ke w_j + w_i.Ke u0_j + w_i.Ke w_j)>, with w the
  # element dofs of the fluctuation and C0 = u0 Ke u0^T the unit-modulus
  # Hooke matrix (exact, float64 on the host). <E> = e_min + (1 - e_min)
  # <rho^p> is exact for a homogeneous cell, whose w is rounding noise, so
  # that cell gets E * C0 up to a few ulps. Element sums run as a pairwise
  # tree in a fixed order: the rounding error is at most
  # ~log2(nx ny) eps times the sum of the magnitudes, whatever the CPU's
  # vector width (a plain float32 reduction of the 8 nx ny products was off
  # by 2e-5 on the solid cell, depending on the instruction set).
  c0 = jnp.asarray(affine_displacements() @ ke_np @ affine_displacements().T,
                   dtype)
  mean_modulus = e_min + (1.0 - e_min) * _pairwise_mean(
      jnp.power(rho, penalty)[None])[0]
  w = jax.vmap(_gather)(jax.lax.stop_gradient(u))          # (3, 8, ny, nx)
  g = jnp.einsum('ab,jb->ja', ke, u0)                      # (3, 8): Ke u0_j
  kw = jnp.einsum('ab,jbxy->jaxy', ke, w)
  cross = jnp.einsum('ia,jaxy->ijxy', g, w)                # u0_i.Ke w_j
  energy = (cross + jnp.swapaxes(cross, 0, 1)
            + jnp.einsum('iaxy,jaxy->ijxy', w, kw)) * modulus[None, None]
  tensor = mean_modulus * c0 + _pairwise_mean(energy.reshape(9, ny, nx)
                                              ).reshape(3, 3)
  tensor = 0.5 * (tensor + tensor.T)
  return Homogenization(tensor, u, iters, res)


def _pairwise_mean(v: jax.Array) -> jax.Array:
  """`(k, ny, nx)` -> `(k,)` means over the cell, summed as a pairwise tree.

  The order of the additions is fixed by the code (halving, zero-padded to
  a power of two), so the result does not depend on how XLA vectorizes a
  reduction, and its rounding error is at most ceil(log2(nx ny)) eps times
  the mean of |v| (Higham, "Accuracy and Stability of Numerical
  Algorithms", section 4.2).
  """
  k, n = v.shape[0], v.shape[1] * v.shape[2]
  flat = v.reshape(k, n)
  size = 1 << max(n - 1, 0).bit_length()
  flat = jnp.pad(flat, ((0, 0), (0, size - n)))
  while flat.shape[1] > 1:
    half = flat.shape[1] // 2
    flat = flat[:, :half] + flat[:, half:]
  return flat[:, 0] / n


def effective_tensor(rho: jax.Array, **options) -> jax.Array:
  """`(..., ny, nx)` densities -> `(..., 3, 3)` effective stiffness (E0).

  Batched `homogenize` (vmap over the leading axes); `options` as there.
  """
  rho = _check_cell(rho)
  batch = rho.shape[:-2]
  flat = rho.reshape((-1,) + rho.shape[-2:])
  out = jax.vmap(lambda r: homogenize(r, **options).tensor)(flat)
  return out.reshape(batch + (3, 3))


def axial_moduli(tensor: jax.Array) -> jax.Array:
  """`(..., 3, 3)` stiffness -> `(..., 2)` (E_x, E_y) = 1 / diag(inv(C))[:2]."""
  compliance = jnp.linalg.inv(tensor)
  return 1.0 / jnp.stack(
      [compliance[..., 0, 0], compliance[..., 1, 1]], axis=-1
  )


def effective_modulus(rho: jax.Array, **options) -> jax.Array:
  """`(..., ny, nx)` densities -> `(...)` mean axial modulus (E_x+E_y)/2/E0.

  `options` as in `homogenize`. Differentiable with respect to rho.
  """
  return jnp.mean(axial_moduli(effective_tensor(rho, **options)), axis=-1)


__all__ = [
    'E_MIN',
    'Homogenization',
    'MAX_ITER',
    'PENALTY',
    'POISSON',
    'PRECONDITIONERS',
    'TOL',
    'affine_displacements',
    'axial_moduli',
    'effective_modulus',
    'effective_tensor',
    'element_stiffness',
    'homogenize',
    'interpolate_modulus',
    'plane_stress_matrix',
]
