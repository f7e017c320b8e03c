"""Ballistics (SPEC section 7, third column).

The paper's Table 5 gives ballistics the same settings as the robot arm
(6 blocks, 3 x 256 LeakyReLU subnets, batch 512, 500 epochs, lr 1e-2 -> 1e-4,
localization lr 5e-3); change here only what should differ.
"""

from experiments.configs import robot_arm


def get_config():
  return robot_arm.get_config()
