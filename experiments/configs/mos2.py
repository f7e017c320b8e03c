"""MoS2 band gap (SPEC section 7, "crystal" column)."""

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
  c.solve.localize_learning_rate = 1e-3
  return c
