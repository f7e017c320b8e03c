"""Figures from arrays: structure of what is drawn."""

import numpy as np

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
  np.testing.assert_allclose([b.get_x() for b in bars[:10]],
                             [b.get_x() for b in bars[10:]])


def test_training_curves_skip_missing_keys():
  fig = plotting.training_curves({'l_y': np.array([1.0, 0.1]),
                                  'val_loss': np.array([2.0, 0.2])})
  lines = fig.axes[0].get_lines()
  assert len(lines) == 2
  np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 0.1])
