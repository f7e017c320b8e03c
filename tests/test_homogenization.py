"""Tests of the FEM homogenization against closed forms and a dense solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax.tasks import homogenization as hom

NU = hom.POISSON
E_MIN = hom.E_MIN
P = hom.PENALTY
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)

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


def _dense_stiffness(rho):
  """Assembled dense float64 periodic K, element moduli and element dofs."""
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
  return k, e, edofs


def _kappa(rho):
  """Condition number of K on the zero-mean fluctuations (its two rigid
  translations excluded): how far a residual ||r|| <= tol ||b|| lets the
  solution move, ||du|| <= kappa tol ||u||."""
  lam = np.linalg.eigvalsh(_dense_stiffness(rho)[0])
  return float(lam[-1] / lam[2])


def _dense_tensor(rho):
  """C_H from an assembled dense float64 system with one node pinned."""
  rho = np.asarray(rho, np.float64)
  ny, nx = rho.shape
  ke = _reference_ke()
  k, e, edofs = _dense_stiffness(rho)
  ndof = 2 * ny * nx
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


def _assembly_tol(c, cells):
  """Float32 round-off of a tensor assembled from `cells` elements: the
  pairwise element mean of O(|C|) terms, rounding bound (log2(cells) +
  8-term contractions, 16) eps max|C|, doubled (the symmetrization and the
  u0.Ke w / w.Ke w sums)."""
  levels = int(np.ceil(np.log2(cells)))
  return 2 * (levels + 16) * EPS32 * float(np.abs(c).max())


def _solver_tol(c):
  """|C_ij - C*_ij| from the PCG stop: C = C* + W^T K W (the energy is
  stationary in u), a PSD error below hom.TOL C* in the energy sense, so
  entrywise below hom.TOL sqrt(C_ii C_jj) (Cauchy-Schwarz)."""
  d = np.sqrt(np.abs(np.diag(np.asarray(c, np.float64))))
  return hom.TOL * np.outer(d, d)


def _moduli_tol(c, dc):
  """Relative error of hom.axial_moduli(c) (E_i = 1 / S_ii, S = C^-1) when
  each entry of c is off by <= dc_ij: dS = -S dC S moves S_ii by at most
  (|S| dc |S|)_ii; float32 LU of the 3x3 adds a backward error of 3n eps |C|
  (Higham, thm 9.4, n = 3) and 1 / S_ii one rounding."""
  c = np.asarray(c, np.float64)
  s = np.abs(np.linalg.inv(c))
  dc = dc + 9 * EPS32 * np.abs(c)
  return float(np.max(np.diag(s @ dc @ s)[:2] / np.diag(s)[:2])) + EPS32


def _dense_solver_tol(rho, ref, tol=hom.TOL):
  """|C_ij - C*_ij| from the PCG stop, a priori: the energy error e^T K e
  = r^T K^+ r <= ||r||^2 / lambda_min with ||r|| <= tol ||f||, and ||f||^2
  <= lambda_max f^T K^+ f = lambda_max N (C_V - C*)_ii (the fluctuation's
  energy), so (C - C*)_ii <= tol^2 kappa(K) (C_V - C*)_ii; off the
  diagonal by Cauchy-Schwarz. kappa from the dense float64 K."""
  voigt = _hooke(_modulus(rho).mean())
  d = np.sqrt(np.abs(np.diag(voigt - ref)))
  return tol**2 * _kappa(rho) * np.outer(d, d)


def _assert_within(got, ref, tol):
  """|got - ref| <= tol entrywise (tol an array of the same shape)."""
  err = np.abs(np.asarray(got, np.float64) - ref)
  assert np.all(err <= tol), (err, tol)


def test_element_stiffness_matches_exact_energy():
  # Both float64: 4 Gauss points of B^T D B (9 products per entry and
  # point, 36 terms in all) against P^-T G P^-1 (two 8-term products of an
  # 8 x 8 inverse of a 0/1 matrix, whose condition ~20 amplifies its
  # round-off): (36 + 2 * 8 * 20) eps64 max |Ke|, ~3e-14.
  ke = _reference_ke()
  np.testing.assert_allclose(
      hom.element_stiffness(NU), ke, rtol=0,
      atol=(36 + 2 * 8 * 20) * EPS64 * np.abs(ke).max())


def test_homogeneous_cell_gives_solid_moduli():
  res = _result(jnp.ones((8, 8)))
  c = np.asarray(res.tensor, np.float64)
  # f = 0 up to rounding: PCG stops at once and w = 0 exactly, so C is
  # float32(<E>) * float32(C0): 1 - e_min stored (1 rounding), + e_min (1),
  # C0 stored (1), the product (1); <rho^p> = 64 / 64 is exact.
  np.testing.assert_array_equal(res.iterations, 0)
  np.testing.assert_allclose(c, _hooke(1.0), rtol=0,
                             atol=4 * EPS32 * np.abs(c).max())
  np.testing.assert_allclose(
      hom.axial_moduli(res.tensor), [1.0, 1.0], rtol=_moduli_tol(
          c, 4 * EPS32 * np.abs(c).max()))


def test_uniform_intermediate_density_scales_by_simp():
  c = np.asarray(_tensor(jnp.full((8, 8), 0.5)), np.float64)
  e = E_MIN + 0.5**P * (1.0 - E_MIN)
  # As for the solid cell (4 roundings, w = 0) plus rho^p by float32 pow
  # (<= 2 ulps); the pairwise mean of 64 equal values is exact.
  np.testing.assert_allclose(c, _hooke(e), rtol=0,
                             atol=6 * EPS32 * np.abs(c).max())


def test_matches_dense_float64_solve():
  rho = np.random.default_rng(0).uniform(0.0, 1.0, (8, 8))
  rho32 = rho.astype(np.float32)
  res = _result(jnp.asarray(rho32))
  # The reference on the float32 densities the code sees; the PCG stop
  # (a priori, ~1e-6 here) and the float32 assembly (~5e-6).
  ref32 = _dense_tensor(rho32)
  _assert_within(res.tensor, ref32, _dense_solver_tol(rho32, ref32)
                 + _assembly_tol(ref32, rho.size))
  ref = _dense_tensor(rho)
  assert np.all(np.asarray(res.residual) <= hom.TOL)
  assert np.all(np.asarray(res.iterations) < hom.MAX_ITER)
  with jax.enable_x64(True):
    c64 = jax.jit(lambda r: hom.homogenize(r, tol=1e-12).tensor)(
        jnp.asarray(rho))
    assert c64.dtype == jnp.float64
    # tol 1e-12: the solver term is ~1e-21; the assembly round-off as in
    # float32 with eps64.
    _assert_within(c64, ref, _dense_solver_tol(rho, ref, 1e-12)
                   + _assembly_tol(ref, rho.size) * EPS64 / EPS32)


def test_binary_cell_matches_dense_float64_solve():
  rho = (np.random.default_rng(1).uniform(size=(8, 8)) < 0.5) * 1.0
  ref = _dense_tensor(rho)
  # Contrast 1000: kappa(K) ~ 4e3, the solver term ~TOL^2 kappa (C_V - C*).
  _assert_within(_tensor(jnp.asarray(rho, jnp.float32)), ref,
                 _dense_solver_tol(rho, ref) + _assembly_tol(ref, rho.size))


def test_rectangular_odd_cell_matches_dense_float64_solve():
  rho = np.random.default_rng(9).uniform(0.0, 1.0, (4, 7)).astype(np.float32)
  ref = _dense_tensor(rho)
  _assert_within(_tensor(jnp.asarray(rho)), ref,
                 _dense_solver_tol(rho, ref) + _assembly_tol(ref, rho.size))


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
  tensor = _tensor(jnp.asarray(rho, jnp.float32))
  moduli = np.asarray(hom.axial_moduli(tensor))
  c = np.asarray(tensor, np.float64)
  # The PCG error is PSD (W^T K W <= TOL C*), so S = C^-1 and each E_i =
  # 1 / S_ii move by at most hom.TOL relative, without amplification; the
  # float32 assembly round-off (entrywise) goes through |S| dC |S|.
  rtol = hom.TOL + _moduli_tol(c, _assembly_tol(c, rho.size))
  np.testing.assert_allclose(moduli[0], e.mean(), rtol=rtol)
  reuss = 1.0 / ((1.0 - NU**2) * np.mean(1.0 / e) + NU**2 / e.mean())
  np.testing.assert_allclose(moduli[1], reuss, rtol=rtol)


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
    # The computed C exceeds C* by a PSD error (stationary energy) of at
    # most hom.TOL C* (hence the Voigt side's hom.TOL ||C||); both sides carry
    # the float32 assembly round-off, entrywise, 3 ||.||_max >= ||.||_2.
    noise = 3 * _assembly_tol(c, cell.size)
    assert np.linalg.eigvalsh(voigt - c).min() > -hom.TOL * scale - noise
    assert np.linalg.eigvalsh(c - reuss).min() > -noise
    # Strictly inside for these heterogeneous cells (1e-3: a margin far
    # above the tolerances above, ~1e-4).
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
  # Both sides are separate solves of the same exact problem (the PCG runs
  # and the sums in another order): each within the solver and assembly
  # bounds of C*, so twice both apart (the permutations are exact).
  tol = 2 * (_solver_tol(c) + _assembly_tol(c, rho.size))
  for cell, expected in cases:
    got = _tensor(jnp.asarray(np.ascontiguousarray(cell)))
    _assert_within(got, expected, tol)
  e_rot = hom.axial_moduli(_tensor(jnp.asarray(np.rot90(rho).copy())))
  # Each E_i within hom.TOL (PSD solver error, see the laminates) plus the
  # assembly round-off through |S| dC |S|, on both sides.
  np.testing.assert_allclose(
      e_rot, np.asarray(hom.axial_moduli(jnp.asarray(c)))[::-1],
      rtol=2 * (hom.TOL + _moduli_tol(c, _assembly_tol(c, rho.size))))


def _third_derivative(f, x, v, step):
  """|d^3/dt^3 f(x + t v)| at t = 0 by the central third difference."""
  return abs(float(f(x + 2 * step * v) - 2 * f(x + step * v)
                   + 2 * f(x - step * v) - f(x - 2 * step * v))) / (
                       2 * step**3)


def test_gradient_matches_finite_differences():
  rng = np.random.default_rng(5)
  solve_tol = 1e-12
  with jax.enable_x64(True):
    rho = jnp.asarray(rng.uniform(0.2, 0.9, (8, 8)))
    f = jax.jit(lambda r: hom.effective_modulus(r, tol=solve_tol))
    grad = jax.jit(jax.grad(f))(rho)
    assert grad.dtype == jnp.float64
    kappa = _kappa(rho)
    f0 = abs(float(f(rho)))
    h = 1e-5

    def check(g_v, v):
      fd = (f(rho + h * v) - f(rho - h * v)) / (2 * h)
      # Central difference: truncation h^2 / 6 |f^(3)| (f^(3) by a third
      # difference at 1e-3, where its own round-off is ~1e-5); each f off
      # by the float64 assembly round-off (the PSD solver error, tol^2
      # kappa, is below it), over h; the gradient (u held fixed) is off to
      # first order in the fluctuation error, 2 kappa^1/2 tol ||grad|| ||v||.
      trunc = h**2 / 6 * _third_derivative(f, rho, v, 1e-3)
      noise = _assembly_tol(f0, rho.size) * EPS64 / EPS32 / h
      grad_err = 2 * np.sqrt(kappa) * solve_tol * float(
          jnp.linalg.norm(grad) * jnp.linalg.norm(v))
      np.testing.assert_allclose(g_v, fd, rtol=0,
                                 atol=trunc + noise + grad_err)

    for _ in range(3):
      v = jnp.asarray(rng.normal(size=(8, 8)))
      check(jnp.vdot(grad, v), v)
    check(grad[2, 5], jnp.zeros((8, 8)).at[2, 5].set(1.0))  # one pixel


def test_displacement_derivative_matches_finite_differences():
  rng = np.random.default_rng(6)
  solve_tol = 1e-12
  with jax.enable_x64(True):
    rho = jnp.asarray(rng.uniform(0.2, 0.9, (6, 6)))
    v = jnp.asarray(rng.normal(size=(6, 6)))
    u = jax.jit(lambda r: hom.homogenize(r, tol=solve_tol).displacement)
    du = jax.jit(lambda r, t: jax.jvp(u, (r,), (t,))[1])(rho, v)
    h = 1e-4
    fd = (u(rho + h * v) - u(rho - h * v)) / (2 * h)
    # Each solve (u, and the tangent solve for du) is off by <= kappa
    # (tol + 64 eps64) times its solution (the residual stop, floored at
    # hom's rounding level); the central difference adds h^2 / 6 ||u^(3)||
    # (third difference at 1e-2, where the solve errors over 1e-6 are
    # ~1e-4 of it). 2-norms throughout.
    kappa = _kappa(rho)
    solve_err = kappa * (solve_tol + 64 * EPS64)
    norm = lambda a: float(jnp.linalg.norm(a))
    u3 = norm(u(rho + 2e-2 * v) - 2 * u(rho + 1e-2 * v)
              + 2 * u(rho - 1e-2 * v) - u(rho - 2e-2 * v)) / (2 * 1e-6)
    bound = (h**2 / 6 * u3 + solve_err * norm(u(rho)) / h
             + solve_err * norm(du))
    assert norm(du - fd) <= bound, (norm(du - fd), bound)
    # Reverse mode through the displacement solve (adjoint PCG): the two
    # sides differ by the tangent and the adjoint solve errors, each <=
    # solve_err ||w|| ||du|| (the adjoint's right-hand side is w).
    w = jnp.asarray(rng.normal(size=(3, 2, 6, 6)))
    g = jax.jit(jax.grad(lambda r: jnp.vdot(w, u(r))))(rho)
    np.testing.assert_allclose(jnp.vdot(g, v), jnp.vdot(w, du), rtol=0,
                               atol=2 * solve_err * norm(w) * norm(du))


def test_batched_matches_single_cells():
  rng = np.random.default_rng(7)
  cells = jnp.asarray(rng.uniform(size=(2, 3, 8, 8)), jnp.float32)
  batched = _tensors(cells)
  assert batched.shape == (2, 3, 3, 3)
  # vmap runs the same per-cell operations (converged cells frozen by
  # select; the element sums a fixed pairwise tree): bitwise equal.
  for i, j in np.ndindex(2, 3):
    np.testing.assert_array_equal(batched[i, j], _tensor(cells[i, j]))
  y = jax.jit(hom.effective_modulus)(cells)
  assert y.shape == (2, 3)
  e = hom.axial_moduli(batched)
  # The same inversions and one add, halved (exact): bitwise as well.
  np.testing.assert_array_equal(y, (e[..., 0] + e[..., 1]) / 2)


def test_fft_preconditioner_is_exact_for_homogeneous_operator():
  """Nearly uniform cell: exact inverse -> PCG converges in <= 3 steps."""
  rho = 0.8 + 1e-3 * np.random.default_rng(8).uniform(size=(8, 8))
  rho = jnp.asarray(rho, jnp.float32)
  fft = _result(rho)
  jacobi = jax.jit(lambda r: hom.homogenize(r, preconditioner='jacobi'))(rho)
  assert int(np.max(fft.iterations)) <= 3
  assert int(np.min(jacobi.iterations)) > int(np.max(fft.iterations))
  # Two solves of one problem, each within the solver and assembly bounds.
  c = np.asarray(fft.tensor, np.float64)
  _assert_within(jacobi.tensor, c,
                 2 * (_solver_tol(c) + _assembly_tol(c, rho.size)))


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
