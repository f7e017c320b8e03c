"""Schedules at chosen steps, against hand-computed values."""

import numpy as np
import pytest

from ipage_jax import schedules


def test_bidirectional_weights_at_chosen_steps():
  w = schedules.bidirectional_weights(1001, peak=10.0, xz_start=0.1,
                                      y_end=0.0, switch_fraction=0.5)
  # begin = 500, end = 1000; cosine ramp.
  for step in (0, 250, 500):
    got = w(step)
    np.testing.assert_allclose([got.x, got.y, got.z], [0.1, 10.0, 0.1])
  mid = w(750)  # half-way: cosine fraction 0.5
  np.testing.assert_allclose([mid.x, mid.y, mid.z], [5.05, 5.0, 5.05],
                             rtol=1e-6)
  quarter = w(625)  # fraction 0.25 -> 0.5 (1 - cos(pi / 4))
  frac = 0.5 * (1 - np.cos(np.pi / 4))
  np.testing.assert_allclose(quarter.y, 10.0 * (1 - frac), rtol=1e-6)
  end = w(1000)
  np.testing.assert_allclose([end.x, end.y, end.z], [10.0, 0.0, 10.0],
                             atol=1e-6)
  np.testing.assert_allclose(w(5000).y, 0.0, atol=1e-6)


@pytest.mark.parametrize('shape,expected', [
    ('linear', 1.0 + (9.0 - 1.0) * 0.25),
    ('exponential', 1.0 * 9.0 ** 0.25),
])
def test_ramp_shapes(shape, expected):
  s = schedules.ramp(1.0, 9.0, begin_step=100, end_step=200, shape=shape)
  np.testing.assert_allclose(s(0), 1.0)
  np.testing.assert_allclose(s(125), expected, rtol=1e-6)
  np.testing.assert_allclose(s(300), 9.0, rtol=1e-6)


def test_exponential_learning_rate_end_points():
  lr = schedules.exponential_learning_rate(1e-3, 1e-5, 1000)
  np.testing.assert_allclose(lr(0), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(500), 1e-4, rtol=1e-4)
  np.testing.assert_allclose(lr(1000), 1e-5, rtol=1e-4)


def test_bad_arguments():
  with pytest.raises(ValueError, match='shape'):
    schedules.ramp(0, 1, 0, 10, shape='nope')
  with pytest.raises(ValueError, match='end_step'):
    schedules.ramp(0, 1, 10, 10)
  with pytest.raises(ValueError, match='positive'):
    schedules.ramp(0.0, 1.0, 0, 10, shape='exponential')
  with pytest.raises(ValueError, match='switch_fraction'):
    schedules.bidirectional_weights(100, switch_fraction=1.0)
  with pytest.raises(ValueError, match='learning rates'):
    schedules.exponential_learning_rate(0.0, 1e-5, 10)
