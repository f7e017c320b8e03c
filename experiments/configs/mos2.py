"""MoS2 band gap (SPEC section 7, "crystal" column).

Network, batch, epochs and training lr as in the spec table. Localization
as for the sinewave and the robot arm (1000 Adam steps, 1e-2 -> 1e-5 cosine,
1.2 N candidates, the N best kept by surrogate error): with the table's 500
steps at 1e-3 about 18 % of the solutions for 1.0 eV had not reached the
level set (protocol-B error vs oracle 0.21 eV^2 against 0.013 eV^2 with
these settings, same model; docs/results.md).

Of 2 N localized candidates iPage keeps the N most typical of the training
data (smallest latent norm ||f_z(x)||^2 among those on the surrogate's
level set): the solutions that re-simulate worst against the oracle are the
ones far from every DFT row, where surrogate and oracle disagree; on the
same model this halves the protocol-B error again (0.0067 -> 0.0043 eV^2 at
2 N candidates). The baselines keep their own ranking.

MMD kernel widths 0.2-1.3 plus 5 and 20: with the first four alone the
latent of one training seed in five never became N(0, I) (column means up
to 9, standard deviations up to 15; its posterior samples landed 100-10,000x
outside the data box), and those kernels hardly see mass that far away. The
two wide ones pull it back (same seed: means within 0.2, standard deviations
1.0-2.3, protocol-B error 3.4e-3 eV^2 instead of 0.99).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.width = 8          # zero-padding: z takes 7 columns (x_dim = 7)
  c.model.num_blocks = 4
  c.model.hidden = 64
  c.model.depth = 3
  c.model.activation = 'relu'
  c.train.batch_size = 256
  c.train.epochs = 1000
  c.train.learning_rate = 1e-3
  c.train.final_learning_rate = 1e-5
  c.train.mmd_widths = (0.2, 0.5, 0.9, 1.3, 5.0, 20.0)
  c.solve.localize_steps = 1000
  c.solve.localize_learning_rate = 1e-2
  c.solve.localize_final_learning_rate = 1e-5
  c.solve.oversample = 2.0
  c.solve.rank_by = 'typicality'
  return c
