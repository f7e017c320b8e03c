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
  # --quick: tiny settings for smoke tests (seconds, not minutes).
  c.quick = ml_collections.ConfigDict()
  c.quick.epochs = 20
  c.quick.data_size = 2000
  c.quick.batch_size = 256
  c.quick.hidden = 32
  c.quick.localize_steps = 100
  return c
