"""Default configuration of an experiment run (all tasks).

Per-task files import this and change only what differs. Override from the
shell with e.g. `--config.train.epochs=5`; the model, training and solve
fields are documented in `ipage_jax.pipeline.default_config`.
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

  # What a run is asked (the scripts' flags set these; see runner.py).
  c.run = ml_collections.ConfigDict()
  c.run.task = ''                 # set by the task script
  c.run.method = 'ipage'          # one of ipage_jax.methods.NAMES
  c.run.target = ''               # 'a,b,...'; '' = the task's default
  c.run.target_file = ''          # .npy of shape (T, M) instead
  c.run.num_solutions = 1000      # solutions per target
  c.run.reuse_model = False       # reuse a model of the same fingerprint
  c.run.donors = []               # further models to reuse (benchmark)

  # The benchmark's protocols (experiments/benchmark.py); off by default.
  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.heldout_targets = 0  # protocol A rows held out; 0: the run's
  c.evaluate.rt_targets = 0       # r_T on the first of them; 0: off
  c.evaluate.rt_max = 50          # r_T: proposals per target (largest T)
  c.evaluate.steps_grid = ()      # localization steps of the budget curve
  c.evaluate.steps_solutions = 200   # its protocol-B solutions
  c.evaluate.coverage_solutions = 200  # mode coverage at this Ns (sinewave)
  return c
