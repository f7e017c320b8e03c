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


def _linear(x):
  return x @ jnp.asarray(_A).T


def _x0(n=6, d=3, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, d))


def test_linear_surrogate_reaches_its_root():
  res = loc.localize(_linear, _x0(), _B, steps=1000, learning_rate=0.1)
  root = np.linalg.solve(_A.astype(np.float64), _B)
  np.testing.assert_allclose(res.x, np.tile(root, (6, 1)), atol=1e-4)
  assert res.loss.shape == (6,)
  np.testing.assert_array_less(res.loss, 1e-8)
  # Reported loss is ||A x - b||^2 at the returned x.
  ref = np.sum((np.asarray(res.x, np.float64) @ _A.T - _B) ** 2, axis=1)
  np.testing.assert_allclose(res.loss, ref, atol=1e-9)
  np.testing.assert_array_equal(res.boundary, np.zeros(6))
  assert int(res.steps) == 1000 and res.trace is None


def test_nonlinear_surrogate_lands_on_unit_sphere():
  norm2 = lambda x: jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  x0 = _x0(8, 3, seed=1)
  res = loc.localize(norm2, x0, jnp.ones(1), steps=600, learning_rate=0.02)
  np.testing.assert_allclose(np.linalg.norm(res.x, axis=1), np.ones(8),
                             atol=5e-3)
  # Many different solutions, not one point: rows stay apart.
  assert np.min(np.linalg.norm(res.x[:, None] - res.x[None], axis=-1)
                + 10 * np.eye(8)) > 0.05


def test_per_row_targets():
  targets = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0], [3.0, 1.0, 1.0]],
                     np.float32)
  res = loc.localize(_linear, _x0(3), targets, steps=1000, learning_rate=0.1)
  roots = np.linalg.solve(_A.astype(np.float64), targets.T).T
  np.testing.assert_allclose(res.x, roots, atol=1e-4)


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
  expected = x0 - lr * g / (np.abs(g) + 1e-8)
  np.testing.assert_allclose(res.x, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('tol', [None, 1e-6])
def test_rows_are_independent(tol):
  x0 = _x0(5, 3, seed=2)
  kw = dict(steps=300, learning_rate=0.05, tol=tol)
  batch = loc.localize(_linear, x0, _B, **kw)
  for i in (0, 3):
    alone = loc.localize(_linear, x0[i:i + 1], _B, **kw)
    np.testing.assert_allclose(batch.x[i], alone.x[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.loss[i], alone.loss[0], rtol=1e-4,
                               atol=1e-9)


def test_boundary_loss_exact_values():
  lower = np.array([-1.0, 0.0], np.float32)
  upper = np.array([1.0, 1.0], np.float32)
  x = np.array([[0.0, 0.5], [1.0, 0.0], [2.0, -3.0], [-1.5, 1.25]],
               np.float32)
  # Row 3: |2 - 0| - 1 = 1 and |-3 - 0.5| - 0.5 = 3. Row 4: 0.5 + 0.25.
  np.testing.assert_allclose(loc.boundary_loss(x, lower, upper),
                             [0.0, 0.0, 4.0, 0.75], atol=1e-6)


def test_boundary_penalty_pulls_minimizer_inside():
  # min (x - 2)^2 + w * ReLU(|x| - 1): x* = 2 - w/2 for w < 2, x* = 1 for
  # w >= 2 (the kink at the box edge); without the penalty x* = 2.
  x0 = np.array([[0.0], [-0.5], [0.9]], np.float32)
  box = (np.array([-1.0], np.float32), np.array([1.0], np.float32))
  kw = dict(steps=3000, learning_rate=0.01)
  free = loc.localize(lambda x: x, x0, np.array([2.0]), **kw)
  np.testing.assert_allclose(free.x, 2.0, atol=1e-4)
  half = loc.localize(lambda x: x, x0, np.array([2.0]), bounds=box,
                      boundary_weight=1.0, **kw)
  np.testing.assert_allclose(half.x, 1.5, atol=1e-4)
  np.testing.assert_allclose(half.boundary, 0.5, atol=1e-4)
  np.testing.assert_allclose(half.loss, 0.25, atol=1e-4)
  hard = loc.localize(lambda x: x, x0, np.array([2.0]), bounds=box,
                      boundary_weight=4.0, **kw)
  np.testing.assert_allclose(hard.x, 1.0, atol=2e-2)


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
  # trace[0] is the mean loss at x0.
  ref0 = np.mean(np.sum((np.asarray(x0) @ _A.T - _B) ** 2, axis=1))
  np.testing.assert_allclose(res.trace[0], ref0, rtol=1e-5)
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
  ref0 = np.mean(np.sum((np.asarray(x0) @ _A.T - _B) ** 2, axis=1))
  np.testing.assert_allclose(res.trace[0], ref0, rtol=1e-5)
  assert res.trace[-1] < 0.5 * res.trace[0]


def test_zero_steps_returns_start():
  x0 = _x0(3, 3)
  res = loc.localize(_linear, x0, _B, steps=0, learning_rate=0.1)
  np.testing.assert_array_equal(res.x, x0)
  ref = np.sum((np.asarray(x0) @ _A.T - _B) ** 2, axis=1)
  np.testing.assert_allclose(res.loss, ref, rtol=1e-5)


@pytest.mark.parametrize('tol', [None, 1e-6])
def test_jit_and_eager_agree(tol):
  x0 = _x0(4, 3, seed=5)
  box = (-np.ones(3, np.float32), np.ones(3, np.float32))
  kw = dict(steps=200, learning_rate=0.05, bounds=box, boundary_weight=0.5,
            tol=tol)
  eager = loc.localize(_linear, x0, _B, **kw)
  jitted = jax.jit(lambda x, y: loc.localize(_linear, x, y, **kw))(x0, _B)
  factory = loc.make_localizer(lambda _, x: _linear(x), **kw)(None, x0, _B)
  for other in (jitted, factory):
    np.testing.assert_allclose(other.x, eager.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other.loss, eager.loss, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(other.boundary, eager.boundary, atol=1e-6)
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
  np.testing.assert_allclose(first.x[0], np.linalg.solve(_A, _B), atol=1e-3)
  np.testing.assert_allclose(second.x[0], np.linalg.solve(a2, 3.0 * _B),
                             atol=1e-3)
  # Ahead-of-time lowering of the same computation, as with jax.jit.
  compiled = localizer.lower(jnp.asarray(_A), _x0(4), _B).compile()
  aot = compiled(jnp.asarray(_A), _x0(4), jnp.asarray(_B))
  np.testing.assert_allclose(aot.x, first.x, rtol=1e-6, atol=1e-7)


def test_integer_start_is_promoted_to_float32():
  # Integer starts are promoted to float32, not rejected or truncated.
  res = loc.localize(_linear, np.zeros((2, 3), np.int32), _B, steps=1000,
                     learning_rate=0.1)
  assert res.x.dtype == jnp.float32
  np.testing.assert_allclose(res.x[0], np.linalg.solve(_A, _B), atol=1e-4)


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
