"""Ballistics (SPEC section 7, third column)."""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.num_blocks = 6
  c.model.hidden = 256
  c.model.activation = 'leaky_relu'
  c.train.batch_size = 512
  c.train.epochs = 500
  c.train.learning_rate = 1e-2
  c.train.final_learning_rate = 1e-4
  c.solve.localize_learning_rate = 5e-3
  return c
