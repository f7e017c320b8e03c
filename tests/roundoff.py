"""Float32 round-off budgets shared by the tests (imported as `roundoff`)."""

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
