"""Figures from arrays: structure of what is drawn."""

import numpy as np
import pytest

from ipage_jax import plotting


def test_marginals_panels_and_shared_edges():
  rng = np.random.default_rng(0)
  fig = plotting.marginals({'data': rng.normal(size=(200, 7)),
                            'solutions': rng.normal(size=(20, 7)) + 3.0},
                           list('abcdefg'), bins=10, title='t')
  visible = [ax for ax in fig.axes if ax.get_visible()]
  assert len(visible) == 7
  assert [ax.get_title() for ax in visible] == list('abcdefg')
  # Two histograms per panel, 10 bars each, on the same edges.
  bars = visible[0].patches
  assert len(bars) == 20
  # The same bin edges for both sets: exact.
  np.testing.assert_array_equal([b.get_x() for b in bars[:10]],
                                [b.get_x() for b in bars[10:]])


def test_training_curves_skip_missing_keys():
  fig = plotting.training_curves({'l_y': np.array([1.0, 0.1]),
                                  'val_loss': np.array([2.0, 0.2])})
  lines = fig.axes[0].get_lines()
  assert len(lines) == 2
  np.testing.assert_array_equal(lines[0].get_ydata(), [1.0, 0.1])


def test_space_filling_panels_strata_and_min_distance():
  u = np.array([[0.1, 0.1], [0.5, 0.9], [0.9, 0.4]])
  fig = plotting.space_filling({'a': u, 'b': u[:2]}, title='t')
  assert len(fig.axes) == 2
  ax = fig.axes[0]
  np.testing.assert_array_equal(ax.collections[0].get_offsets(), u)
  d = np.sqrt(0.4**2 + 0.5**2)  # the closest pair: rows 1 and 2
  assert ax.get_title() == f'a\nmin distance {d:.3f}'
  assert len(ax.get_lines()) == 2 * (3 - 1)  # inner stratum edges, x and y
  no_grid = plotting.space_filling({'a': u}, strata=False)
  assert not no_grid.axes[0].get_lines()


def test_space_filling_rejects_bad_shapes():
  with pytest.raises(ValueError, match='empty'):
    plotting.space_filling({})
  with pytest.raises(ValueError, match=r"'a'.*\(n, 2\)"):
    plotting.space_filling({'a': np.zeros((4, 3))})


def _plane(x):
  return x[:, 0] + x[:, 1]


def _square_column(x):
  return x[:, :1] ** 2


def test_landscape_2d_draws_points_levels_and_marks():
  fn = _plane
  pts = {'data': np.zeros((5, 2)), 'solutions': np.ones((3, 2)) * 0.5}
  fig = plotting.landscape_2d(fn, ((-1, -1), (1, 1)), levels=[0.5],
                              points=pts, marks=[[0.0, 0.0], [0.5, 0.5]],
                              resolution=20, title='t')
  ax = fig.axes[0]
  offsets = [c.get_offsets() for c in ax.collections
             if len(c.get_offsets()) in (3, 5)]
  assert [len(o) for o in offsets] == [5, 3]
  assert [t.get_text() for t in ax.texts] == ['1', '2']
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      'data', 'solutions']
  assert ax.get_xlim() == (-1.0, 1.0) and ax.get_title() == 't'


def test_landscape_2d_accepts_column_output_and_checks_input():
  fn = _square_column
  fig = plotting.landscape_2d(fn, ((0, 0), (1, 2)), resolution=10)
  assert fig.axes[0].get_ylim() == (0.0, 2.0)
  with pytest.raises(ValueError, match='bounds'):
    plotting.landscape_2d(fn, ((1, 0), (0, 1)))
  with pytest.raises(ValueError, match='points'):
    plotting.landscape_2d(fn, ((0, 0), (1, 1)), resolution=10,
                          points={'p': np.zeros((3, 3))})


def test_property_histogram_shared_bins_target_and_invalid_count():
  data = np.linspace(0.0, 1.0, 50)
  designs = np.array([[0.4], [0.5], [np.nan]])
  fig = plotting.property_histogram({'data': data, 'designs': designs},
                                    target=0.45, bins=5, xlabel='E')
  ax = fig.axes[0]
  bars = ax.patches
  assert len(bars) == 10  # 5 bins per set
  # The same bin edges for both sets: exact.
  np.testing.assert_array_equal([b.get_x() for b in bars[:5]],
                                [b.get_x() for b in bars[5:]])
  (line,) = ax.get_lines()
  np.testing.assert_array_equal(line.get_xdata(), [0.45, 0.45])
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels == ['data (50)', 'designs (2, 1 invalid)', 'target 0.45']
  assert ax.get_xlabel() == 'E'


def test_property_histogram_rejects_bad_input():
  with pytest.raises(ValueError, match='empty'):
    plotting.property_histogram({})
  with pytest.raises(ValueError, match='shape'):
    plotting.property_histogram({'a': np.zeros((3, 2))})
  with pytest.raises(ValueError, match='finite'):
    plotting.property_histogram({'a': np.array([np.nan])})


def test_calibration_columns_histograms_and_coverage_lines():
  from ipage_jax import metrics
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 2)).astype(np.float32)
  samples = (x[:, None] + rng.normal(size=(50, 19, 2))).astype(np.float32)
  cal = metrics.calibration(x, samples, levels=(0.5, 0.9), num_bins=4)
  fig = plotting.calibration({'a': cal, 'b': cal}, ['x1', 'x2'], title='t')
  assert len(fig.axes) == 4
  assert [fig.axes[i].get_title() for i in (0, 1)] == ['a', 'b']
  # Bottom-left panel: diagonal, central and HPD curves at the 2 levels.
  lines = fig.axes[2].get_lines()
  assert len(lines) == 3
  # Plotted data are copies of the given arrays: exact.
  np.testing.assert_array_equal(lines[1].get_ydata(),
                                np.asarray(cal.central_coverage).mean(-1))
  np.testing.assert_array_equal(lines[2].get_ydata(), cal.hpd_coverage)
  with pytest.raises(ValueError, match='empty'):
    plotting.calibration({}, ['x1'])
