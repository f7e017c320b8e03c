"""Schedules at chosen steps, against hand-computed values."""

import numpy as np
import pytest

from ipage_jax import schedules

EPS32 = float(np.finfo(np.float32).eps)
# A schedule value is a handful of float32 operations on O(peak) numbers:
# the constants' representation (1/2 ulp each), the step fraction, pi frac,
# cos (<= 2 ulps), 1 - cos, the scaling by (end - start) and the sum: <= 8
# roundings relative to the largest value involved.
SCHEDULE_ULPS = 8


def test_bidirectional_weights_at_chosen_steps():
  w = schedules.bidirectional_weights(1001, peak=10.0, xz_start=0.1,
                                      y_end=0.0, switch_fraction=0.5)
  # begin = 500, end = 1000; cosine ramp.
  tol = SCHEDULE_ULPS * EPS32 * 10.0  # at the scale of peak = 10
  for step in (0, 250, 500):
    got = w(step)
    # Fraction 0: cos(0) = 1 and the start value come out exactly (up to
    # 0.1's float32 representation).
    np.testing.assert_allclose([got.x, got.y, got.z], [0.1, 10.0, 0.1],
                               rtol=EPS32 / 2)
  mid = w(750)  # half-way: cosine fraction 0.5
  np.testing.assert_allclose([mid.x, mid.y, mid.z], [5.05, 5.0, 5.05],
                             rtol=0, atol=tol)
  quarter = w(625)  # fraction 0.25 -> 0.5 (1 - cos(pi / 4))
  frac = 0.5 * (1 - np.cos(np.pi / 4))
  np.testing.assert_allclose(quarter.y, 10.0 * (1 - frac), rtol=0, atol=tol)
  end = w(1000)
  np.testing.assert_allclose([end.x, end.y, end.z], [10.0, 0.0, 10.0],
                             rtol=0, atol=tol)
  np.testing.assert_allclose(w(5000).y, 0.0, rtol=0, atol=tol)


@pytest.mark.parametrize('shape,expected', [
    ('linear', 1.0 + (9.0 - 1.0) * 0.25),
    ('exponential', 1.0 * 9.0 ** 0.25),
])
def test_ramp_shapes(shape, expected):
  s = schedules.ramp(1.0, 9.0, begin_step=100, end_step=200, shape=shape)
  # Fraction 0: 1 + 8 * 0 and 1 * 9^0 are exact.
  np.testing.assert_array_equal(s(0), 1.0)
  # Linear: 1 + 8 * 0.25 is exact; exponential: 9^frac = exp(frac log 9),
  # log's rounding amplified by log 9 < 2.2, and exp's: <= 4 eps relative.
  np.testing.assert_allclose(s(125), expected, rtol=4 * EPS32)
  np.testing.assert_allclose(s(300), 9.0, rtol=4 * EPS32)


def test_exponential_learning_rate_end_points():
  lr = schedules.exponential_learning_rate(1e-3, 1e-5, 1000)
  # init rate^(t / T) in float32: the constants' representation, the power
  # exp(frac log 0.01) with log's rounding amplified by |log 0.01| < 4.7,
  # exp's and the product's: <= 8 eps relative.
  np.testing.assert_allclose(lr(0), 1e-3, rtol=8 * EPS32)
  np.testing.assert_allclose(lr(500), 1e-4, rtol=8 * EPS32)
  np.testing.assert_allclose(lr(1000), 1e-5, rtol=8 * EPS32)


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
