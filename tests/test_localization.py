"""Tests for ipage_jax.localization (batched Adam localization)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import localization as loc

# A full-rank linear surrogate: the only solution of A x = b is A^-1 b.
_A = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 0.0, 3.0]],
              np.float32)
_B = np.array([1.0, -2.0, 0.5], np.float32)
EPS32 = float(np.finfo(np.float32).eps)
_A64 = _A.astype(np.float64)
_A_INV_NORM = np.linalg.norm(np.linalg.inv(_A64), 2)  # ||A^-1||_2 ~ 0.88


def _residual_round_off(x, targets, a=_A64):
  """Per-row bound on the float32 error of A x - b: every entry is a sum of
  d products and a subtraction, (d + 1) eps (|A| |x| + |b|) (2-norm)."""
  x = np.asarray(x, np.float64)
  d = x.shape[1]
  err = (d + 1) * EPS32 * (np.abs(x) @ np.abs(a).T + np.abs(targets))
  return np.linalg.norm(err, axis=1)


def _loss_round_off(x, targets, a=_A64):
  """Per-row bound on the float32 error of the loss ||A x - b||^2: the
  residual r is off by dr (`_residual_round_off`), the loss by 2 |r| dr +
  dr^2 (its own d roundings are smaller: d eps |r|^2 <= dr |r|)."""
  targets = np.broadcast_to(targets, np.shape(x))
  dr = _residual_round_off(x, targets, a)
  r = np.linalg.norm(np.asarray(x, np.float64) @ a.T - targets, axis=1)
  return 2 * r * dr + dr ** 2


def _check_root(res, targets, a=_A64, converged=True):
  """The returned x, its reported loss ||A x - b||^2 and the exact root.

  The loss is recomputed in float64 from the float32 x: the code's residual
  r is off by at most dr (`_residual_round_off`), so its loss by 2 |r| dr +
  dr^2. Then ||x - A^-1 b|| <= ||A^-1|| ||A x - b|| <= ||A^-1|| (sqrt(loss)
  + dr), whatever the optimizer did. `converged`: the loss is also at the
  float32 floor, dr^2 (Adam's steps shrink with the gradient).
  """
  targets = np.broadcast_to(targets, res.x.shape)
  dr = _residual_round_off(res.x, targets, a)
  ref = np.sum((np.asarray(res.x, np.float64) @ a.T - targets) ** 2, 1)
  np.testing.assert_array_less(np.abs(res.loss - ref),
                               2 * np.sqrt(ref) * dr + dr ** 2)
  if converged:
    np.testing.assert_array_less(res.loss, dr ** 2)
  roots = np.linalg.solve(a, targets.T).T
  err = np.linalg.norm(np.asarray(res.x, np.float64) - roots, axis=1)
  a_inv_norm = np.linalg.norm(np.linalg.inv(a), 2)
  np.testing.assert_array_less(err, a_inv_norm * (np.sqrt(ref) + dr))


def _linear(x):
  return x @ jnp.asarray(_A).T


def _x0(n=6, d=3, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, d))


def test_linear_surrogate_reaches_its_root():
  res = loc.localize(_linear, _x0(), _B, steps=1000, learning_rate=0.1)
  assert res.loss.shape == (6,)
  # Reported loss is ||A x - b||^2 at the returned x, at the float32 floor
  # (~1e-11; 1e-8 before), and x the root to ||A^-1|| times the residual.
  _check_root(res, _B)
  np.testing.assert_array_equal(res.boundary, np.zeros(6))
  assert int(res.steps) == 1000 and res.trace is None


def test_nonlinear_surrogate_lands_on_unit_sphere():
  norm2 = lambda x: jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  x0 = _x0(8, 3, seed=1)
  res = loc.localize(norm2, x0, jnp.ones(1), steps=600, learning_rate=0.02)
  # Converged to float32 round-off: |x|^2 - 1 is computed with 4 roundings
  # at |x|^2 ~ 1, and x itself lies on the float32 grid (spacing up to eps
  # |x_i| per coordinate, moving |x|^2 by up to 2 d eps, d = 3): loss <=
  # (16 eps)^2. Then ||x| - 1| = ||x|^2 - 1| / (|x| + 1) <= (16 + 4) eps / 2.
  np.testing.assert_array_less(res.loss, (16 * EPS32) ** 2)
  norms = np.linalg.norm(np.asarray(res.x, np.float64), axis=1)
  np.testing.assert_allclose(norms, np.ones(8), rtol=0, atol=10 * EPS32)
  # Many different solutions, not one point: rows stay apart.
  assert np.min(np.linalg.norm(res.x[:, None] - res.x[None], axis=-1)
                + 10 * np.eye(8)) > 0.05


def test_per_row_targets():
  targets = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0], [3.0, 1.0, 1.0]],
                     np.float32)
  res = loc.localize(_linear, _x0(3), targets, steps=1000, learning_rate=0.1)
  _check_root(res, targets)


def test_first_step_is_sign_of_gradient_per_row():
  # Adam's first update is -lr * g / (|g| + eps) elementwise. With gradients
  # near eps this pins the objective to a SUM over rows (a mean would shrink
  # every gradient by n and the step with it).
  scale = 1e-4
  f = lambda x: scale * x
  x0 = np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [1.0, 3.0]], np.float32)
  y = np.array([1e-4, 0.0], np.float32)
  lr = 0.1
  res = loc.localize(f, x0, y, steps=1, learning_rate=lr)
  g = 2.0 * scale * (scale * x0.astype(np.float64) - y)
  # Adam's first step (Kingma & Ba) in float64, with b1 = 0.9 and b2 =
  # 0.999 as float32 stores them: the bias correction 1 - b2 divides b2's
  # representation error by 1e-3, a 1.3e-5 relative change of the step that
  # the float32 code really makes.
  b1, b2 = (float(np.float32(b)) for b in (0.9, 0.999))
  m_hat = (1 - 0.9) * g / (1 - b1)
  v_hat = (1 - 0.999) * g ** 2 / (1 - b2)
  expected = x0 - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  # Float32 otherwise: g = 2 s (s x - y) is off by 3 eps relative (s x - y
  # does not cancel here: x = 0 or s x - y is exactly 0 or O(y)); the
  # moments, bias corrections and sqrt round ~6 times more. The step
  # m / (sqrt(v) + 1e-8) has relative slope <= 1 in g, so it is off by lr 9
  # eps at most; the update x - step rounds at |x|.
  np.testing.assert_allclose(res.x, expected, rtol=EPS32,
                             atol=lr * 9 * EPS32)


@pytest.mark.parametrize('tol', [None, 1e-6])
def test_rows_are_independent(tol):
  x0 = _x0(5, 3, seed=2)
  kw = dict(steps=300, learning_rate=0.05, tol=tol)
  batch = loc.localize(_linear, x0, _B, **kw)
  for i in (0, 3):
    alone = loc.localize(_linear, x0[i:i + 1], _B, **kw)
    # Each row runs the same float32 operations in both runs; only the
    # surrogate's 3-term dot products may be compiled differently for 1 or
    # 5 rows (vector width, FMA), ~1 ulp of the gradient per step. Adam's
    # normalized step passes a relative gradient change on at most 1:1, so
    # 300 steps of lr 0.05 differ by <= 300 lr eps ~ 2e-6 (bit for bit on
    # the CPUs tried); the loss by its slope 2 |A^T r| ~ 1 times that.
    tol = 300 * kw['learning_rate'] * EPS32
    np.testing.assert_allclose(batch.x[i], alone.x[0], rtol=0, atol=tol)
    np.testing.assert_allclose(batch.loss[i], alone.loss[0], rtol=0,
                               atol=2 * tol)


def test_boundary_loss_exact_values():
  lower = np.array([-1.0, 0.0], np.float32)
  upper = np.array([1.0, 1.0], np.float32)
  x = np.array([[0.0, 0.5], [1.0, 0.0], [2.0, -3.0], [-1.5, 1.25]],
               np.float32)
  # Row 3: |2 - 0| - 1 = 1 and |-3 - 0.5| - 0.5 = 3. Row 4: 0.5 + 0.25.
  # Every operand is a small dyadic rational: exact in float32.
  np.testing.assert_array_equal(loc.boundary_loss(x, lower, upper),
                                [0.0, 0.0, 4.0, 0.75])


def test_boundary_penalty_pulls_minimizer_inside():
  # min (x - 2)^2 + w * ReLU(|x| - 1): x* = 2 - w/2 for w < 2, x* = 1 for
  # w >= 2 (the kink at the box edge); without the penalty x* = 2.
  x0 = np.array([[0.0], [-0.5], [0.9]], np.float32)
  box = (np.array([-1.0], np.float32), np.array([1.0], np.float32))
  kw = dict(steps=3000, learning_rate=0.01)
  # Smooth minima: Adam's steps shrink with the gradient, and 3000 steps of
  # lr 0.01 reach the float32 grid near x* to a few ulps; 16 ulps at |x|=2
  # (1e-4 before).
  atol = 16 * EPS32 * 2.0
  free = loc.localize(lambda x: x, x0, np.array([2.0]), **kw)
  np.testing.assert_allclose(free.x, 2.0, rtol=0, atol=atol)
  half = loc.localize(lambda x: x, x0, np.array([2.0]), bounds=box,
                      boundary_weight=1.0, **kw)
  np.testing.assert_allclose(half.x, 1.5, rtol=0, atol=atol)
  # boundary = x - 1 and loss = (x - 2)^2 (slope 1 at 1.5) move with x.
  np.testing.assert_allclose(half.boundary, 0.5, rtol=0, atol=atol)
  np.testing.assert_allclose(half.loss, 0.25, rtol=0, atol=atol)
  hard = loc.localize(lambda x: x, x0, np.array([2.0]), bounds=box,
                      boundary_weight=4.0, **kw)
  # At the kink the gradient jumps between -2 and +2 and never vanishes:
  # Adam keeps steps of ~lr and x oscillates within 2 lr of 1.
  np.testing.assert_allclose(hard.x, 1.0, rtol=0,
                             atol=2 * kw['learning_rate'])


def test_tol_stops_early_and_freezes_rows():
  x0 = _x0(4, 3, seed=3)
  res = loc.localize(_linear, x0, _B, steps=5000, learning_rate=0.05,
                     tol=1e-6, trace=True)
  taken = int(res.steps)
  assert 0 < taken < 5000
  np.testing.assert_array_less(res.loss, 1e-6)
  assert res.trace.shape == (5000,)
  assert np.all(np.isfinite(res.trace[:taken]))
  assert np.all(np.isnan(res.trace[taken:]))
  # trace[0] is the mean loss at x0 (float64 reference): the rows' loss
  # round-off, and the mean of n = 4 positive terms (4 eps relative).
  x64 = np.asarray(x0, np.float64)
  ref0 = np.mean(np.sum((x64 @ _A64.T - _B) ** 2, axis=1))
  np.testing.assert_allclose(
      res.trace[0], ref0, rtol=4 * EPS32,
      atol=np.mean(_loss_round_off(x0, _B)))
  # A row already below tol does not move at all.
  root = np.linalg.solve(_A.astype(np.float64), _B).astype(np.float32)
  start = np.concatenate([root[None], np.asarray(x0[:1])], axis=0)
  res2 = loc.localize(_linear, start, _B, steps=5000, learning_rate=0.05,
                      tol=1e-6)
  np.testing.assert_array_equal(res2.x[0], root)


@pytest.mark.parametrize('tol', [None, 1e-6])
def test_progress_is_reported_and_changes_nothing(tol):
  calls = []
  kw = dict(steps=50, learning_rate=0.05, tol=tol)
  x0 = _x0(4, 3, seed=5)
  localizer = loc.make_localizer(lambda _, x: _linear(x),
                                 progress=lambda d, s: calls.append((d, s)),
                                 **kw)
  with_progress = localizer(None, x0, _B)
  jax.effects_barrier()
  plain = loc.localize(_linear, x0, _B, **kw)
  np.testing.assert_array_equal(with_progress.x, plain.x)
  done = sorted({d for d, _ in calls})
  assert {s for _, s in calls} == {50}
  assert done[0] == 0 and done[-1] <= int(plain.steps)
  if tol is None:  # every steps // PROGRESS_UPDATES = 5 steps
    assert done == list(range(0, 51, 5))
  with pytest.raises(ValueError, match='progress'):
    loc.make_localizer(lambda _, x: x, steps=1, learning_rate=1.0,
                       progress='yes')


def test_trace_of_fixed_steps():
  x0 = _x0(4, 3, seed=4)
  res = loc.localize(_linear, x0, _B, steps=50, learning_rate=0.05,
                     trace=True)
  assert res.trace.shape == (50,)
  # As in test_tol_stops_early_and_freezes_rows.
  ref0 = np.mean(np.sum((np.asarray(x0, np.float64) @ _A64.T - _B) ** 2, 1))
  np.testing.assert_allclose(
      res.trace[0], ref0, rtol=4 * EPS32,
      atol=np.mean(_loss_round_off(x0, _B)))
  assert res.trace[-1] < 0.5 * res.trace[0]


def test_zero_steps_returns_start():
  x0 = _x0(3, 3)
  res = loc.localize(_linear, x0, _B, steps=0, learning_rate=0.1)
  np.testing.assert_array_equal(res.x, x0)
  ref = np.sum((np.asarray(x0, np.float64) @ _A64.T - _B) ** 2, axis=1)
  np.testing.assert_array_less(np.abs(res.loss - ref),
                               _loss_round_off(x0, _B))


@pytest.mark.parametrize('tol', [None, 1e-6])
def test_jit_and_eager_agree(tol):
  x0 = _x0(4, 3, seed=5)
  box = (-np.ones(3, np.float32), np.ones(3, np.float32))
  kw = dict(steps=200, learning_rate=0.05, bounds=box, boundary_weight=0.5,
            tol=tol)
  eager = loc.localize(_linear, x0, _B, **kw)
  jitted = jax.jit(lambda x, y: loc.localize(_linear, x, y, **kw))(x0, _B)
  factory = loc.make_localizer(lambda _, x: _linear(x), **kw)(None, x0, _B)
  # As in test_rows_are_independent: <= steps lr eps apart in x, and the
  # loss and boundary terms (slopes ~ 2 |A^T r| <= 2 and 1) twice that.
  tol = 200 * kw['learning_rate'] * EPS32
  for other in (jitted, factory):
    np.testing.assert_allclose(other.x, eager.x, rtol=0, atol=tol)
    np.testing.assert_allclose(other.loss, eager.loss, rtol=0, atol=2 * tol)
    np.testing.assert_allclose(other.boundary, eager.boundary, rtol=0,
                               atol=2 * tol)
    assert int(other.steps) == int(eager.steps)


def test_make_localizer_does_not_retrace():
  traces = []

  def apply_fn(params, x):
    traces.append(1)  # Python side effect: runs only while tracing.
    return x @ params.T

  localizer = loc.make_localizer(apply_fn, steps=800, learning_rate=0.1)
  first = localizer(jnp.asarray(_A), _x0(4), _B)
  count = len(traces)
  assert count > 0
  # New params, starts and targets of the same shapes: no new trace.
  a2 = 2.0 * _A
  second = localizer(jnp.asarray(a2), _x0(4, seed=7), 3.0 * _B)
  assert len(traces) == count
  # Both reach their own roots (1e-3 before): see `_check_root`.
  _check_root(first, _B)
  _check_root(second, 3.0 * _B, a=2.0 * _A64)
  # Ahead-of-time lowering of the same computation, as with jax.jit.
  compiled = localizer.lower(jnp.asarray(_A), _x0(4), _B).compile()
  aot = compiled(jnp.asarray(_A), _x0(4), jnp.asarray(_B))
  # The same lowered computation compiled the same way: bit for bit.
  np.testing.assert_array_equal(aot.x, first.x)


def test_integer_start_is_promoted_to_float32():
  # Integer starts are promoted to float32, not rejected or truncated.
  res = loc.localize(_linear, np.zeros((2, 3), np.int32), _B, steps=1000,
                     learning_rate=0.1)
  assert res.x.dtype == jnp.float32
  _check_root(res, _B)


@pytest.mark.parametrize('x0, y, match', [
    (np.zeros(3), _B, 'x0 must have shape'),
    (np.zeros((2, 3)), np.zeros(2), r'y_target must have shape \(3,\)'),
    (np.zeros((2, 3)), np.zeros((3, 3)), r'\(2, 3\)'),
    (np.array([[0.0, np.nan, 0.0]]), _B, 'x0 contains NaN'),
    (np.zeros((1, 3)), np.array([0.0, np.inf, 0.0]), 'y_target contains'),
])
def test_bad_inputs_raise(x0, y, match):
  with pytest.raises(ValueError, match=match):
    loc.localize(_linear, x0, y, steps=1, learning_rate=0.1)


def test_bad_inputs_raise_through_make_localizer():
  localizer = loc.make_localizer(lambda _, x: _linear(x), steps=1,
                                 learning_rate=0.1)
  with pytest.raises(ValueError, match='y_target must have shape'):
    localizer(None, np.zeros((2, 3)), np.zeros(4))
  with pytest.raises(ValueError, match='x0 contains NaN'):
    localizer(None, np.full((2, 3), np.nan), _B)


@pytest.mark.parametrize('kw, match', [
    (dict(steps=-1), 'steps must be >= 0'),
    (dict(steps=1.5), 'steps must be an int'),
    (dict(learning_rate=0.0), 'learning_rate'),
    (dict(tol=-1.0), 'tol must be > 0'),
    (dict(boundary_weight=-1.0), 'boundary_weight'),
    (dict(bounds=(np.ones(3), np.zeros(3))), 'lower <= upper'),
    (dict(bounds=(np.zeros(2), np.ones(2))), r'lower must have shape \(3,\)'),
    (dict(bounds=np.zeros(3)), 'bounds must be a pair'),
])
def test_bad_settings_raise(kw, match):
  settings = dict(steps=1, learning_rate=0.1)
  settings.update(kw)
  with pytest.raises(ValueError, match=match):
    loc.localize(_linear, np.zeros((2, 3)), _B, **settings)


def test_forward_with_wrong_output_rank_raises():
  with pytest.raises(ValueError, match='forward_fn must map'):
    loc.localize(lambda x: jnp.sum(x, axis=-1), np.zeros((2, 3)),
                 np.zeros(1), steps=1, learning_rate=0.1)


def test_binarize_weight_pushes_rows_to_the_nearer_face_of_the_box():
  """A forward model already at its target: only the penalty moves x."""
  x0 = jnp.array([[0.3, 0.8], [0.6, 0.1]])
  box = (jnp.zeros(2), jnp.ones(2))
  flat = lambda x: jnp.zeros((x.shape[0], 1))
  plain = loc.localize(flat, x0, jnp.zeros(1), steps=200,
                                learning_rate=1e-2, bounds=box)
  np.testing.assert_array_equal(plain.x, x0)  # zero gradient: no move
  res = loc.localize(flat, x0, jnp.zeros(1), steps=200,
                              learning_rate=1e-2, bounds=box,
                              binarize_weight=1.0)
  # 4 u (1 - u) is symmetric about 1/2: each coordinate heads for the face
  # it started nearer to, and ends closer to it than it started.
  np.testing.assert_array_equal(np.asarray(res.x) > 0.5, np.asarray(x0) > 0.5)
  start = np.asarray(loc.binary_penalty(x0, *box))
  end = np.asarray(loc.binary_penalty(res.x, *box))
  assert np.all(end < 0.5 * start)
  np.testing.assert_allclose(
      loc.binary_penalty(jnp.array([[0.0, 1.0], [0.5, 0.5]]), *box),
      [0.0, 1.0])
  with pytest.raises(ValueError, match='binarize_weight needs bounds'):
    loc.localize(flat, x0, jnp.zeros(1), steps=2,
                          learning_rate=1e-2, binarize_weight=1.0)
