"""Evaluation: final and posterior errors, mode coverage, r_T."""

import dataclasses

import jax
import numpy as np
import pytest

from ipage_jax import evaluation
from ipage_jax import methods
from ipage_jax import pipeline
from ipage_jax import solving
from ipage_jax import tasks
from ipage_jax.tasks import sinewave

import roundoff

TASK = tasks.get('sinewave')
EPS32 = roundoff.EPS32


def _sols(x, x_posterior, target, surrogate_error=None, steps=0.0):
  """Solutions of a fake method: given designs for (M,) or (T, M) targets."""
  x = np.asarray(x, np.float32)
  return solving.Solutions(
      x=x, x_posterior=np.asarray(x_posterior, np.float32),
      y_surrogate=np.zeros(x.shape[:-1] + (1,), np.float32),
      surrogate_error=(np.zeros(x.shape[:-1]) if surrogate_error is None
                       else surrogate_error),
      y_target=np.asarray(target, np.float32),
      gradient_steps_per_solution=steps)


# Float64 mean squared error and its float32 round-off bound (roundoff).
_q = roundoff.sine_mse


def test_posterior_error_of_a_known_posterior():
  """The posterior samples' error is theirs, not the solutions'."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (8, 2))
  posterior = rng.uniform(-1, 1, (8, 2))
  record = evaluation.evaluate_solutions(TASK, _sols(x, posterior, [1.2]),
                                         posterior=True)
  # Float64 references, the code's float32 round-off bound (`_q`).
  for key, designs in (('resimulation_error', x),
                       ('posterior_resimulation_error', posterior)):
    want, tol = _q(designs, 1.2)
    np.testing.assert_allclose(record[key], want, rtol=0, atol=tol)
  assert record['num_solutions'] == 8 and np.isfinite(record['diversity'])
  assert 'posterior_resimulation_error' not in evaluation.evaluate_solutions(
      TASK, _sols(x, posterior, [1.2]), posterior=False)
  # Protocol A: one solution per target, each against its own target.
  targets = np.array([[1.2], [0.3], [-0.5]])
  a = evaluation.evaluate_solutions(
      TASK, _sols(x[:3, None], posterior[:3, None], targets), posterior=True)
  want, tol = _q(x[:3], targets[:, 0])
  np.testing.assert_allclose(a['resimulation_error'], want, rtol=0, atol=tol)
  assert a['num_solutions'] == 1 and np.isnan(a['diversity'])


def test_design_stats_of_the_solutions():
  """A task's `design_stats` are reported for the solutions (all rows of
  protocol A's (T, 1, D) too), none for a task without them."""
  seen = []

  def stats(x):
    seen.append(np.array(x))
    return {'rows': float(len(x))}

  task = dataclasses.replace(TASK, design_stats=stats)
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, (3, 1, 2))
  record = evaluation.evaluate_solutions(
      task, _sols(x, x, [[1.2], [0.3], [0.0]]), posterior=False)
  assert record['design'] == {'rows': 3.0}
  np.testing.assert_array_equal(seen[0], x.reshape(3, 2).astype(np.float32))
  assert 'design' not in evaluation.evaluate_solutions(
      TASK, _sols(x, x, [[1.2], [0.3], [0.0]]), posterior=False)


@pytest.mark.filterwarnings('ignore:the latent')
def test_posterior_error_equals_final_without_localization():
  x, y = TASK.make_dataset(jax.random.PRNGKey(0), 512)
  config = pipeline.default_config()
  config.model.width, config.model.num_blocks = 4, 1
  config.model.hidden, config.train.epochs = 16, 2
  config.train.batch_size = 128
  inn = methods.get('inn')
  model = inn.fit(jax.random.PRNGKey(1), x, y, config)
  sols = inn.solve(model, jax.random.PRNGKey(2), [1.2], 16)
  record = evaluation.evaluate_solutions(TASK, sols,
                                         posterior=inn.draws_posterior)
  assert (record['posterior_resimulation_error']
          == record['resimulation_error'])
  assert not methods.get('na').draws_posterior


def _modes_reached(x, target, tol=0.05):
  """Reference: distinct modes (nearest of the 9 centres) of the designs
  within tol of the target, in plain numpy."""
  x = np.asarray(x, np.float64)
  y = np.sin(3 * np.pi * x[:, 0]) + np.cos(3 * np.pi * x[:, 1])
  centres = np.asarray(sinewave.MODE_CENTERS, np.float64)
  nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), 1)
  return len(set(nearest[np.abs(y - target) < tol].tolist()))


def test_mode_coverage_of_solutions_and_posterior():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (400, 2)).astype(np.float32)
  posterior = rng.uniform(-0.3, 0.3, (400, 2)).astype(np.float32)
  cov = evaluation.mode_coverage(TASK, _sols(x, posterior, [1.2]),
                                 posterior=True)
  assert cov['modes_covered'] == _modes_reached(x, 1.2)
  assert cov['posterior_modes_covered'] == _modes_reached(posterior, 1.2)
  assert 0 < cov['posterior_modes_covered'] < cov['modes_covered']
  assert cov['num_solutions'] == 400
  assert evaluation.mode_coverage(tasks.get('robot_arm'), None,
                                  posterior=True) == {}
  with pytest.raises(ValueError, match='one target'):
    evaluation.mode_coverage(TASK, _sols(x[None], posterior[None], [[1.2]]),
                             posterior=True)


def test_r_t_ranks_only_the_methods_that_localize():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(2, 3, 2)).astype(np.float32)
  y_targets = np.array([[1.2], [0.3]], np.float32)
  r = roundoff.sine64(x) - np.asarray(y_targets, np.float64)
  err = r ** 2  # float64, (2, 3)
  # Each float32 error is within the `_q` bound of its row, b (2, 3); a min
  # of a prefix is within its largest b; the mean over the 2 targets rounds
  # by eps / 2 of the sum (covered by eps of each error).
  b = np.array([[_q(x[t, i:i + 1], y_targets[t, 0])[1] for i in range(3)]
                for t in range(2)]) + err * EPS32
  surrogate = -err  # ranks the proposals worst-first
  drawn = evaluation.r_t(TASK, _sols(x, x, y_targets, surrogate, 0.0))
  ranked = evaluation.r_t(TASK, _sols(x, x, y_targets, surrogate, 5.0))
  assert drawn['t'] == [1, 2, 3]

  def prefix_min(e, tol, t):
    return e[:, :t].min(1).mean(), tol[:, :t].max(1).mean()

  worst_first = np.argsort(err, 1)[:, ::-1]
  for got, order in ((drawn, np.tile(np.arange(3), (2, 1))),
                     (ranked, worst_first)):
    e = np.take_along_axis(err, order, 1)
    tol = np.take_along_axis(b, order, 1)
    for t in range(3):
      want, atol = prefix_min(e, tol, t + 1)
      np.testing.assert_allclose(got['r_t'][t], want, rtol=0, atol=atol)
  assert ranked['last'] == ranked['r_t'][-1]
