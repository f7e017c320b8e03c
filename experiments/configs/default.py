"""Default configuration of an experiment run (all tasks).

Per-task files import this and change only what differs. Override from the
shell with e.g. `--config.train.epochs=5`.
"""

import ml_collections

from ipage_jax import pipeline


def get_config() -> ml_collections.ConfigDict:
  c = pipeline.default_config()   # model / train / solve sections, seed
  c.data_size = 0                 # rows of training data; 0 = task default
  c.log_every = 50                # epochs between progress lines
  # --quick: overrides (same structure as the config) for smoke tests that
  # take seconds to a minute, not minutes to hours.
  c.quick = ml_collections.ConfigDict()
  c.quick.data_size = 2000
  c.quick.log_every = 5
  c.quick.train = ml_collections.ConfigDict()
  c.quick.train.epochs = 20
  c.quick.train.batch_size = 256
  c.quick.model = ml_collections.ConfigDict()
  c.quick.model.hidden = 32
  c.quick.solve = ml_collections.ConfigDict()
  c.quick.solve.localize_steps = 200
  return c
