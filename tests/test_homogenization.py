"""Tests of the FEM homogenization against closed forms and a dense solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax.tasks import homogenization as hom

NU = hom.POISSON
E_MIN = hom.E_MIN
P = hom.PENALTY

_result = jax.jit(hom.homogenize)
_tensors = jax.jit(hom.effective_tensor)


def _tensor(rho):
  return _result(rho).tensor


def _modulus(rho):
  return E_MIN + np.asarray(rho, np.float64) ** P * (1.0 - E_MIN)


def _hooke(e):
  """Plane-stress Hooke matrix, written out independently of the module."""
  c = e / (1.0 - NU**2)
  return np.array([[c, c * NU, 0.0], [c * NU, c, 0.0],
                   [0.0, 0.0, e / (2.0 * (1.0 + NU))]])


def _reference_ke():
  """Q4 stiffness from the exact energy of the 8 bilinear displacement fields.

  Fields u_x or u_y in {1, x, y, xy} on [0, 1]^2 have linear strains; the
  Gram matrix G of their energies (exact polynomial integrals) and their
  nodal values P give Ke = P^-T G P^-1.
  """
  corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
  # phi: value at (x, y); gradient as linear polynomials (a, b, c) meaning
  # a + b x + c y for d/dx and d/dy.
  phis = [
      (lambda x, y: 1.0, (0, 0, 0), (0, 0, 0)),
      (lambda x, y: x, (1, 0, 0), (0, 0, 0)),
      (lambda x, y: y, (0, 0, 0), (1, 0, 0)),
      (lambda x, y: x * y, (0, 0, 1), (0, 1, 0)),
  ]
  fields, nodal = [], []
  for comp in range(2):
    for value, gx, gy in phis:
      zero = (0, 0, 0)
      if comp == 0:  # u_x = phi: (eps_xx, eps_yy, gamma_xy) = (phi_x, 0, phi_y)
        fields.append((gx, zero, gy))
      else:  # u_y = phi: (0, phi_y, phi_x)
        fields.append((zero, gy, gx))
      col = np.zeros(8)
      for k, (x, y) in enumerate(corners):
        col[2 * k + comp] = value(x, y)
      nodal.append(col)

  def integral(p, q):
    a1, b1, c1 = p
    a2, b2, c2 = q
    return (a1 * a2 + (a1 * b2 + b1 * a2) / 2 + (a1 * c2 + c1 * a2) / 2
            + b1 * b2 / 3 + c1 * c2 / 3 + (b1 * c2 + c1 * b2) / 4)

  d = _hooke(1.0)
  g = np.zeros((8, 8))
  for m, fm in enumerate(fields):
    for n, fn in enumerate(fields):
      g[m, n] = sum(d[i, j] * integral(fm[i], fn[j])
                    for i in range(3) for j in range(3))
  pinv = np.linalg.inv(np.stack(nodal, axis=1))
  return pinv.T @ g @ pinv


def _dense_tensor(rho):
  """C_H from an assembled dense float64 system with one node pinned."""
  rho = np.asarray(rho, np.float64)
  ny, nx = rho.shape
  ke = _reference_ke()
  e = _modulus(rho)
  ndof = 2 * ny * nx
  k = np.zeros((ndof, ndof))
  edofs = []
  for i in range(ny):
    for j in range(nx):
      nodes = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)]
      ids = [(a % ny) * nx + (b % nx) for a, b in nodes]
      dofs = np.array([[2 * n, 2 * n + 1] for n in ids]).ravel()
      edofs.append(dofs)
      k[np.ix_(dofs, dofs)] += e[i, j] * ke
  corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  u0 = []
  for exx, eyy, gxy in np.eye(3):
    v = np.zeros(8)
    v[0::2] = exx * corners[:, 0] + gxy / 2 * corners[:, 1]
    v[1::2] = gxy / 2 * corners[:, 0] + eyy * corners[:, 1]
    u0.append(v)
  chis = []
  for v in u0:
    f = np.zeros(ndof)
    for (i, j), dofs in zip(np.ndindex(ny, nx), edofs):
      f[dofs] -= e[i, j] * ke @ v
    u = np.zeros(ndof)
    u[2:] = np.linalg.solve(k[2:, 2:], f[2:])
    chis.append([v + u[dofs] for dofs in edofs])
  c = np.zeros((3, 3))
  for a in range(3):
    for b in range(3):
      c[a, b] = sum(e[i, j] * chis[a][m] @ ke @ chis[b][m]
                    for m, (i, j) in enumerate(np.ndindex(ny, nx)))
  return c / (ny * nx)


def _laminate(e_layers, fractions, normal):
  """Exact C_H of isotropic layers (classical laminate homogenization).

  normal = 1: layers stacked along y (interfaces parallel to x): eps_xx is
  continuous, sigma_yy and sigma_xy are continuous. normal = 0: the same
  with x and y exchanged.
  """
  t = [0] if normal == 1 else [1]
  n = [1, 2] if normal == 1 else [0, 2]
  ds = [_hooke(e) for e in e_layers]
  w = np.asarray(fractions, np.float64)
  avg = lambda fn: sum(wi * fn(d) for wi, d in zip(w, ds))
  inv_nn = lambda d: np.linalg.inv(d[np.ix_(n, n)])
  a = avg(inv_nn)
  b = avg(lambda d: inv_nn(d) @ d[np.ix_(n, t)])
  c = np.zeros((3, 3))
  for col in range(3):
    strain = np.eye(3)[col]
    s_n = np.linalg.solve(a, strain[n] + b @ strain[t])
    sig_t = avg(lambda d: d[np.ix_(t, t)] @ strain[t] + d[np.ix_(t, n)]
                @ inv_nn(d) @ (s_n - d[np.ix_(n, t)] @ strain[t]))
    c[n, col] = s_n
    c[t, col] = sig_t
  return c


def _rel(a, b):
  return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


def test_element_stiffness_matches_exact_energy():
  np.testing.assert_allclose(
      hom.element_stiffness(NU), _reference_ke(), rtol=0, atol=1e-13)


def test_homogeneous_cell_gives_solid_moduli():
  c = np.asarray(_tensor(jnp.ones((8, 8))))
  np.testing.assert_allclose(c, _hooke(1.0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(hom.axial_moduli(c), [1.0, 1.0], rtol=1e-6)


def test_uniform_intermediate_density_scales_by_simp():
  c = np.asarray(_tensor(jnp.full((8, 8), 0.5)))
  e = E_MIN + 0.5**P * (1.0 - E_MIN)
  np.testing.assert_allclose(c, _hooke(e), rtol=1e-6, atol=1e-7)


def test_matches_dense_float64_solve():
  rho = np.random.default_rng(0).uniform(0.0, 1.0, (8, 8))
  ref = _dense_tensor(rho)
  res = _result(jnp.asarray(rho, jnp.float32))
  assert _rel(res.tensor, ref) < 2e-6
  assert np.all(np.asarray(res.residual) <= hom.TOL)
  assert np.all(np.asarray(res.iterations) < hom.MAX_ITER)
  with jax.enable_x64(True):
    c64 = jax.jit(lambda r: hom.homogenize(r, tol=1e-12).tensor)(
        jnp.asarray(rho))
    assert c64.dtype == jnp.float64
    assert _rel(c64, ref) < 1e-10


def test_binary_cell_matches_dense_float64_solve():
  rho = (np.random.default_rng(1).uniform(size=(8, 8)) < 0.5) * 1.0
  assert _rel(_tensor(jnp.asarray(rho, jnp.float32)), _dense_tensor(rho)) < 1e-5


def test_rectangular_odd_cell_matches_dense_float64_solve():
  rho = np.random.default_rng(9).uniform(0.0, 1.0, (4, 7))
  assert _rel(_tensor(jnp.asarray(rho, jnp.float32)), _dense_tensor(rho)) < 2e-6


@pytest.mark.parametrize('rows,low', [(1, 0.0), (3, 0.0), (4, 0.6), (6, 0.3)])
def test_laminates_match_closed_forms(rows, low):
  """Rows of solid on a softer phase: layers stacked along y (and along x)."""
  profile = np.full(8, low)
  profile[:rows] = 1.0
  rho = np.repeat(profile[:, None], 8, axis=1)
  e = _modulus(profile)
  f = np.full(8, 1.0 / 8)
  for cell, normal in ((rho, 1), (rho.T, 0)):
    c = np.asarray(_tensor(jnp.asarray(cell, jnp.float32)), np.float64)
    # rtol: the PCG tolerance (the energy is stationary in u, so its error is
    # below it). atol, for the entries that vanish by symmetry: the
    # pairwise element sum of 64 float32 products of O(|C|) terms, rounding
    # bound (log2(64) + 8-term contractions) eps |C|, doubled.
    np.testing.assert_allclose(
        c, _laminate(e, f, normal), rtol=hom.TOL,
        atol=2 * (6 + 16) * np.finfo(np.float32).eps * np.abs(c).max())
  # Scalar closed forms for equal Poisson ratios: along the layers E = <E>
  # (Voigt); across, 1/E = (1 - nu^2) <1/E> + nu^2 / <E> (Reuss-type).
  moduli = np.asarray(hom.axial_moduli(_tensor(jnp.asarray(rho, jnp.float32))))
  np.testing.assert_allclose(moduli[0], e.mean(), rtol=1e-5)
  reuss = 1.0 / ((1.0 - NU**2) * np.mean(1.0 / e) + NU**2 / e.mean())
  np.testing.assert_allclose(moduli[1], reuss, rtol=1e-4)


def test_random_cells_between_reuss_and_voigt():
  """Energy sense: C_R <= C_H <= C_V as quadratic forms.

  C_V = <C(x)> (affine strain is admissible); C_R = <C(x)^-1>^-1 (uniform
  stress is admissible in the complementary principle).
  """
  rng = np.random.default_rng(2)
  cells = np.stack([
      (rng.uniform(size=(8, 8)) < 0.5) * 1.0,
      rng.uniform(size=(8, 8)),
      (rng.uniform(size=(8, 8)) < 0.3) * 0.8 + 0.1,
  ])
  tensors = np.asarray(_tensors(jnp.asarray(cells, jnp.float32)), np.float64)
  for cell, c in zip(cells, tensors):
    e = _modulus(cell)
    voigt = _hooke(e.mean())
    reuss = np.linalg.inv(np.linalg.inv(_hooke(1.0)) * np.mean(1.0 / e))
    scale = np.linalg.norm(c)
    assert np.linalg.eigvalsh(voigt - c).min() > -1e-5 * scale
    assert np.linalg.eigvalsh(c - reuss).min() > -1e-5 * scale
    # Strictly inside for these heterogeneous cells.
    assert np.linalg.eigvalsh(voigt - c).max() > 1e-3 * scale


def _hs_bounds(k1, m1, k2, m2, f1):
  """2D Hashin-Shtrikman bounds on bulk and shear moduli (well-ordered).

  Phase 1 soft (k1 < k2, m1 < m2), volume fractions f1, f2 = 1 - f1. For
  d = 2 (Hashin 1965, J. Mech. Phys. Solids 13:119, transverse bounds;
  Torquato 2002, Random Heterogeneous Materials, ch. 21):
    k_U = k2 + f1 / (1/(k1 - k2) + f2/(k2 + m2)),
    m_U = m2 + f1 / (1/(m1 - m2) + f2 (k2 + 2 m2) / (2 m2 (k2 + m2))),
  and the lower bounds with the phases swapped.
  """
  f2 = 1.0 - f1

  def bound(ka, ma, kb, mb, fa, fb):  # reference phase b
    k = kb + fa / (1.0 / (ka - kb) + fb / (kb + mb))
    m = mb + fa / (1.0 / (ma - mb) + fb * (kb + 2 * mb)
                   / (2 * mb * (kb + mb)))
    return k, m

  k_up, m_up = bound(k1, m1, k2, m2, f1, f2)
  k_lo, m_lo = bound(k2, m2, k1, m1, f2, f1)
  return (k_lo, k_up), (m_lo, m_up)


def test_isotropic_random_cells_within_hashin_shtrikman():
  """IID pixel cells (statistically isotropic), contrast about 8."""
  rng = np.random.default_rng(3)
  low = 0.5
  cells = np.where(rng.uniform(size=(4, 16, 16)) < 0.5, 1.0, low)
  tensors = np.asarray(_tensors(jnp.asarray(cells, jnp.float32)), np.float64)
  e1, e2 = _modulus(low), _modulus(1.0)
  bulk = lambda e: e / (2.0 * (1.0 - NU))
  shear = lambda e: e / (2.0 * (1.0 + NU))
  for cell, c in zip(cells, tensors):
    f1 = np.mean(cell == low)
    (k_lo, k_up), (m_lo, m_up) = _hs_bounds(
        bulk(e1), shear(e1), bulk(e2), shear(e2), f1)
    # Isotropic parts of the 2D tensor: C11 = k + m, C12 = k - m, C33 = m.
    k = (c[0, 0] + c[1, 1] + 2 * c[0, 1]) / 4
    m = (c[0, 0] + c[1, 1] - 2 * c[0, 1] + 4 * c[2, 2]) / 8
    assert k_lo < k < k_up, (k_lo, k, k_up)
    assert m_lo < m < m_up, (m_lo, m, m_up)


def test_rotation_reflection_and_translation():
  rho = np.random.default_rng(4).uniform(size=(8, 8)).astype(np.float32)
  c = np.asarray(_tensor(jnp.asarray(rho)), np.float64)
  swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
  rot = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
  flip = np.diag([1, 1, -1])
  cases = [
      (np.rot90(rho), rot @ c @ rot),      # 90 degrees: x <-> y, shear sign
      (np.rot90(rho, -1), rot @ c @ rot),
      (rho.T, swap @ c @ swap),            # reflection about the diagonal
      (rho[:, ::-1], flip @ c @ flip),     # mirror x -> -x
      (np.roll(rho, (3, 5), (0, 1)), c),   # periodic translation
  ]
  for cell, expected in cases:
    got = _tensor(jnp.asarray(np.ascontiguousarray(cell)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * c.max())
  e_rot = hom.axial_moduli(_tensor(jnp.asarray(np.rot90(rho).copy())))
  np.testing.assert_allclose(
      e_rot, np.asarray(hom.axial_moduli(jnp.asarray(c)))[::-1], rtol=2e-5)


def test_gradient_matches_finite_differences():
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    rho = jnp.asarray(rng.uniform(0.2, 0.9, (8, 8)))
    f = jax.jit(lambda r: hom.effective_modulus(r, tol=1e-12))
    grad = jax.jit(jax.grad(f))(rho)
    assert grad.dtype == jnp.float64
    h = 1e-5
    for _ in range(3):
      v = jnp.asarray(rng.normal(size=(8, 8)))
      fd = (f(rho + h * v) - f(rho - h * v)) / (2 * h)
      np.testing.assert_allclose(jnp.vdot(grad, v), fd, rtol=1e-7)
    e = jnp.zeros((8, 8)).at[2, 5].set(1.0)  # one pixel
    fd = (f(rho + h * e) - f(rho - h * e)) / (2 * h)
    np.testing.assert_allclose(grad[2, 5], fd, rtol=1e-6)


def test_displacement_derivative_matches_finite_differences():
  rng = np.random.default_rng(6)
  with jax.enable_x64(True):
    rho = jnp.asarray(rng.uniform(0.2, 0.9, (6, 6)))
    v = jnp.asarray(rng.normal(size=(6, 6)))
    u = jax.jit(lambda r: hom.homogenize(r, tol=1e-12).displacement)
    du = jax.jit(lambda r, t: jax.jvp(u, (r,), (t,))[1])(rho, v)
    fd = (u(rho + 1e-6 * v) - u(rho - 1e-6 * v)) / 2e-6
    assert _rel(du, np.asarray(fd)) < 1e-6
    # Reverse mode through the displacement solve (adjoint PCG).
    w = jnp.asarray(rng.normal(size=(3, 2, 6, 6)))
    g = jax.jit(jax.grad(lambda r: jnp.vdot(w, u(r))))(rho)
    np.testing.assert_allclose(jnp.vdot(g, v), jnp.vdot(w, du), rtol=1e-8)


def test_batched_matches_single_cells():
  rng = np.random.default_rng(7)
  cells = jnp.asarray(rng.uniform(size=(2, 3, 8, 8)), jnp.float32)
  batched = _tensors(cells)
  assert batched.shape == (2, 3, 3, 3)
  for i, j in np.ndindex(2, 3):
    np.testing.assert_allclose(
        batched[i, j], _tensor(cells[i, j]), rtol=0, atol=1e-6)
  y = jax.jit(hom.effective_modulus)(cells)
  assert y.shape == (2, 3)
  e = hom.axial_moduli(batched)
  np.testing.assert_allclose(y, (e[..., 0] + e[..., 1]) / 2, rtol=1e-6)


def test_fft_preconditioner_is_exact_for_homogeneous_operator():
  """Nearly uniform cell: exact inverse -> PCG converges in <= 3 steps."""
  rho = 0.8 + 1e-3 * np.random.default_rng(8).uniform(size=(8, 8))
  rho = jnp.asarray(rho, jnp.float32)
  fft = _result(rho)
  jacobi = jax.jit(lambda r: hom.homogenize(r, preconditioner='jacobi'))(rho)
  assert int(np.max(fft.iterations)) <= 3
  assert int(np.min(jacobi.iterations)) > int(np.max(fft.iterations))
  np.testing.assert_allclose(fft.tensor, jacobi.tensor, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('kwargs', [
    dict(e_min=0.0), dict(e_min=1.5), dict(penalty=0.5), dict(nu=0.5),
    dict(tol=0.0), dict(max_iter=0), dict(preconditioner='ilu'),
])
def test_bad_options_raise(kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    hom.homogenize(jnp.ones((4, 4)), **kwargs)


@pytest.mark.parametrize('shape', [(8,), (1, 8), (8, 1)])
def test_bad_shapes_raise(shape):
  with pytest.raises(ValueError, match='rho must have shape'):
    hom.effective_tensor(jnp.ones(shape))


def test_homogenize_rejects_batches():
  with pytest.raises(ValueError, match='one'):
    hom.homogenize(jnp.ones((2, 4, 4)))
