"""Robot arm (the paper's Table 5, second column).

Architecture, batch and epochs as in the table; width, learning rates, the
schedule switch and localization differ where measured better
(docs/results.md, "Robot arm and ballistics").
"""

import ml_collections

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.width = 8                # room for the couplings: 12x lower L_y
  c.model.num_blocks = 6
  c.model.hidden = 256
  c.model.activation = 'leaky_relu'
  c.train.batch_size = 512
  c.train.epochs = 500
  c.train.learning_rate = 1e-3     # the table's 1e-2 diverges
  c.train.final_learning_rate = 1e-5
  c.train.switch_fraction = 0.7    # forward fit alone for 70 % of epochs
  # [y, z, pad] outputs, z of x_dim - y_dim columns (Ardizzone et al. 2019)
  c.model.layout = 'padded'
  # Keep the 10 % of latent draws with the smallest inverse x-padding.
  c.solve.posterior_keep = 0.1
  c.solve.localize_steps = 200     # localization as for the sinewave
  c.solve.localize_learning_rate = 1e-2
  c.solve.localize_final_learning_rate = 1e-5
  c.solve.oversample = 1.2
  # Two retry rounds for the solutions that miss the level set (both
  # candidates of a protocol-A target stalled): arm Q_A 4.1e-4 -> 2.3e-4,
  # ballistics 2.2e-4 -> 1.0e-4, 5 seeds; +6 % gradient work on the arm
  # (docs/results.md, "The defaults over 5 seeds").
  c.solve.retries = 2
  # The baselines train at 1e-3 -> 1e-5 as well (1e-2 is not stable).
  for name in ('mdn', 'cinn', 'cvae', 'na'):
    c[name] = ml_collections.ConfigDict(
        {'train': {'learning_rate': 1e-3, 'final_learning_rate': 1e-5}})
  return c
