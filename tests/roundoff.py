"""Float32 round-off budgets shared by the tests (imported as `roundoff`)."""

import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
# XLA's float32 sin / cos are within 1 eps of the true value for the
# arguments used in the tests (range reduction and polynomial; measured
# <= 0.3 eps on [-12, 12]).
TRIG_ULPS = 1
# XLA's float32 tanh is within 4 eps of the true value, relative (measured
# <= 2.4 eps on [-12, 12], AVX-512 and AVX2 code alike).
TANH_EPS = 4
# jax.random.normal's float32 erf_inv is within 64 eps of the true normal
# quantile of its uniform draw, relative (measured <= 49 eps).
NORMAL_EPS = 64
# |jax.random.normal| <= sqrt(2) erfinv(1 - 2^-24) = 5.42 (the float32
# uniform's extreme |u|), plus that relative error.
NORMAL_MAX = 5.42 * (1 + NORMAL_EPS * EPS32)


def gamma(k):
  """Higham's gamma_k = k u / (1 - k u), u = eps / 2: the relative bound of
  k float32 roundings, e.g. a sum of k + 1 terms in any order against the
  sum of their absolute values."""
  u = EPS32 / 2
  return k * u / (1 - k * u)


def sine64(x):
  """The sinewave task's y in float64 at the float32 designs (..., 2)."""
  x = np.asarray(np.asarray(x, np.float32), np.float64)
  return np.sin(3 * np.pi * x[..., 0]) + np.cos(3 * np.pi * x[..., 1])


def sine_round_off(x, y, exact_inputs=True):
  """Bound on |float32 sinewave - true value| at x (..., 2), y (...).

  The arguments a = fl(3 pi) x round twice (eps / 2 each, relative), and
  once more when x itself was rounded to float32 (exact_inputs False);
  sin and cos have slope <= 1 and add TRIG_ULPS eps each; the sum rounds
  by eps / 2 |y|.
  """
  a = 3 * np.pi * np.abs(np.asarray(x, np.float64))
  arg = (1.0 if exact_inputs else 1.5) * a.sum(-1)
  return EPS32 * (arg + 2 * TRIG_ULPS + np.abs(y) / 2)


def sine_mse(x, targets):
  """Float64 mean squared error of the sinewave at x (n, 2) against float32
  targets (() or (n,)), and the float32 round-off bound of the code's: per
  row d = dy + |y - t| eps / 2 (the subtraction) moves (y - t)^2 by
  2 |y - t| d + d^2, the square rounds by e eps / 2; summing n positive
  terms and dividing by n round by n eps / 2 relative at most."""
  t = np.asarray(np.asarray(targets, np.float32), np.float64)
  y = sine64(x)
  r = y - t
  e = r * r
  d = sine_round_off(x, y) + np.abs(r) * EPS32 / 2
  bound = 2 * np.abs(r) * d + d * d + e * EPS32 / 2
  return e.mean(), bound.mean() + len(e) * EPS32 / 2 * e.mean()


# ----------------------------------------------------------- ensembles, MLPs

EPS64 = float(np.finfo(np.float64).eps)


def mean_round_off(members):
  """Float32 error bound of the mean over axis 0 of (E, n, M) members.

  The sum of E terms rounds E - 1 times, each by eps / 2 of a partial sum
  <= sum |m| = E mean |m|; then the product with the rounded 1 / E, 2
  roundings of eps / 2 of |mean| <= mean |m|: ((E - 1) E / 2 + 1) eps
  mean |m| elementwise.
  """
  e = members.shape[0]
  return ((e - 1) * e / 2 + 1) * EPS32 * np.abs(members).mean(0)


def _silu64(z):
  return z / (1.0 + np.exp(-z))


# float64 activation, its Lipschitz constant, and the float32 rounding of
# the activation itself in eps of |argument|. silu = z sigmoid(z): its slope
# is at most 1.0998 (at z = 2.40); sigmoid by exp, add, divide (or by
# tanh) and the product: <= 4 eps |z|, whatever the formula.
ACTIVATIONS64 = {'silu': (_silu64, 1.1, 4)}


def mlp64(layers, h, dh, activation):
  """A float32 MLP in float64, with a bound on the float32 result's error.

  Args:
    layers: [(kernel (k, m), bias (m,)), ...] float64 copies of the float32
      Dense parameters; `activation` between them, none after the last.
    h: (n, k) exact values of the float32 input; dh: bound on its error.

  Returns:
    (out, bound): the float64 output and a bound on |float32 - out|. A
    float32 dot product of k terms plus the bias is within gamma_{k+1}
    (|W|^T |h| + |b|) of the exact one in any summation order, with or
    without FMA (gamma_j = j u / (1 - j u), u = eps / 2); an input error dh
    moves it by at most |W|^T dh; the activation passes that on times its
    slope and adds its own rounding.
  """
  act, lipschitz, ulps = ACTIVATIONS64[activation]
  for i, (w, b) in enumerate(layers):
    aw = np.abs(w)
    z = h @ w + b
    dz = dh @ aw + gamma(w.shape[0] + 1) * ((np.abs(h) + dh) @ aw
                                            + np.abs(b))
    if i + 1 < len(layers):
      h = act(z)
      dh = lipschitz * dz + ulps * EPS32 * (np.abs(z) + dz)
    else:
      h, dh = z, dz
  return h, dh


# ------------------------------------------------------ finite differences


def central_difference(f, x, h, f_err):
  """Central differences of a float64 function, with an error bound.

  Args:
    f: function of a (d,) point returning an array of any shape S.
    x: (d,) point; h: step.
    f_err: bound on the error of each value of f (scalar or shape S).

  Returns:
    (fd, bound), shape S + (d,): fd[..., j] = (f(x + h e_j) - f(x - h e_j))
    / 2h. The truncation c h^2 + O(h^4) is estimated by Richardson from the
    step 2h: fd(2h) - fd(h) = 3 c h^2 + ..., taken whole (3 times the
    estimate; a bound when the higher terms have c's sign, as for sums of
    exponentials). The rounding of f moves fd by f_err / h.
  """
  x = np.asarray(x, np.float64)

  def central(step):
    cols = []
    for j in range(x.shape[0]):
      dx = np.zeros_like(x)
      dx[j] = step
      cols.append((np.asarray(f(x + dx)) - np.asarray(f(x - dx))) / (2 * step))
    return np.stack(cols, -1)

  fd, fd2 = central(h), central(2 * h)
  return fd, np.abs(fd2 - fd) + np.asarray(f_err)[..., None] / h


# ---------------------------------------------------------------- ballistics

# m / k of the paper's ballistics (m = 0.2 kg, k = 0.25 kg / s).
BALLISTICS_M_OVER_K = 0.2 / 0.25


def landing_round_off(x, ref):
  """Bound on |float32 landing point - ref| at the float32 throws x (n, 4).

  The final rounding to float32 (eps / 2 |y|), plus both float64
  solutions' error (brentq at xtol 1e-15, the float64 terms of eq. 20-21,
  <= 1e4 eps64 at the scale |x1| + x4 m / k; 1e-12 here).
  """
  x = np.abs(np.asarray(x, np.float64))
  return (EPS32 / 2 * np.abs(ref)
          + 1e4 * EPS64 * (x[:, 0] + x[:, 3] * BALLISTICS_M_OVER_K))


# ------------------------------------------------------------ invertible nets

# Float32 roundings of one elementwise map plus its inverse, each at most
# eps at the scale of the values. Affine: exp(s), multiply, add, then
# subtract, exp(-s), multiply, and exp(s) exp(-s) != 1 (2 more): 8. Spline:
# the rational quadratic and its derivative (~12 operations) and the
# inverse's stable quadratic-root formula (~20): 32.
FLOW_ULPS = dict(affine=8, spline=32)
# (kind of elementwise map, how many) per block: a GLOW coupling moves both
# halves, the others one; a permutation only moves data (exact).
FLOW_MAPS = dict(glow=('affine', 2), realnvp=('affine', 1),
                 spline=('spline', 1), actnorm=('affine', 1),
                 permutation=('affine', 0))


def block_ulps(kind):
  """Roundings budgeted for one block of `kind` (FLOW_ULPS, FLOW_MAPS)."""
  map_kind, count = FLOW_MAPS[kind]
  return FLOW_ULPS[map_kind] * count


def inn_ulps(inn):
  """Roundings budgeted for a whole `flows.INN`: couplings and ActNorms."""
  per_block = block_ulps(inn.coupling) + (
      block_ulps('actnorm') if inn.actnorm else 0)
  return inn.num_blocks * per_block


def flow_jacobians(module, params, v, cond=None, method=None):
  """(n, d, d) Jacobians of every row's map by forward-mode AD, as float64
  (independent of the code's own log-det bookkeeping)."""
  def f(a, c):
    c = None if cond is None else c[None]
    return module.apply(params, a[None], c, method=method)[0][0]

  c = np.zeros((v.shape[0], 0), np.float32) if cond is None else cond
  return np.asarray(jax.vmap(jax.jacfwd(f))(v, c), np.float64)


def round_trip_tol(v, out, jac_inv, ulps):
  """Bound on |inverse(forward(v)) - v| per row (n, 1).

  Every rounding is at most eps at the scale of the row's values; to first
  order the inverse passes a perturbation of its input on amplified by at
  most ||J_inv||_inf (the inverse's Jacobians at the rows of `out`,
  (n, d, d); a condition estimate).
  """
  scale = np.maximum(np.abs(np.asarray(v)).max(-1),
                     np.abs(np.asarray(out)).max(-1))
  amp = np.maximum(1.0, np.abs(jac_inv).sum(-1).max(-1))
  return (ulps * EPS32 * scale * amp)[:, None]
