"""Robot arm (SPEC section 7, second column).

Architecture, batch and epochs follow the spec table; the rest is changed
where measured better (docs/results.md, "Robot arm and ballistics"):

* width 8 (4 zero-padding columns): the coupling blocks get room, and the
  forward fit f_y(x) reaches a 12x lower validation error (1.2e-4 vs 1.5e-3,
  standardized) at the same epochs; re-simulation error falls with it.
* training lr 1e-3 -> 1e-5: at the table's 1e-2 -> 1e-4 the loss explodes
  when the MMD terms switch on (L_y 2.6e-4 -> 2.7e8).
* the forward fit alone for the first 70 % of the epochs (the surrogate is
  the best-validation f_y, which keeps improving until the switch).
* localization as for the sinewave: 1000 Adam steps, 1e-2 -> 1e-5 cosine,
  1.2 N candidates, the N best kept by surrogate error.
"""

import ml_collections

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.width = 8
  c.model.num_blocks = 6
  c.model.hidden = 256
  c.model.activation = 'leaky_relu'
  c.train.batch_size = 512
  c.train.epochs = 500
  c.train.learning_rate = 1e-3
  c.train.final_learning_rate = 1e-5
  c.train.switch_fraction = 0.7
  c.solve.localize_steps = 1000
  c.solve.localize_learning_rate = 1e-2
  c.solve.localize_final_learning_rate = 1e-5
  c.solve.oversample = 1.2
  # The baselines' likelihood / regression training is not stable at
  # 1e-2 either; they train at 1e-3 -> 1e-5 (same epochs and batch size).
  for name in ('mdn', 'cinn', 'cvae', 'na'):
    c[name] = ml_collections.ConfigDict(
        {'train': {'learning_rate': 1e-3, 'final_learning_rate': 1e-5}})
  return c
