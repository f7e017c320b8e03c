"""The sinewave demo's --quick settings still solve the problem."""

import jax
import numpy as np

from experiments.configs import sinewave as sinewave_config
from ipage_jax import metrics
from ipage_jax import pipeline
from ipage_jax import tasks
from ipage_jax.tasks import sinewave


def test_quick_settings_cover_at_least_7_of_9_modes():
  config = sinewave_config.get_config()
  config.update(config.quick.to_dict())  # what --quick does
  task = tasks.get('sinewave')
  x, y = task.make_dataset(jax.random.PRNGKey(0), config.data_size or None)
  model = pipeline.fit(jax.random.PRNGKey(1), x, y, config)
  sols = pipeline.solve(model, jax.random.PRNGKey(2), [1.2], 200)
  err = np.abs(np.asarray(sinewave.simulate(sols.x))[:, 0] - 1.2)
  cov = metrics.mode_coverage(sinewave.mode_index(sols.x), err,
                              sinewave.NUM_MODES, tol=0.05)
  assert int(cov.num_covered) >= 7
  # Most solutions are accurate, not just a few per mode.
  assert np.mean(err < 0.05) > 0.8
