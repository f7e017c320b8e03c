"""Ballistics (the paper's Table 5, third column).

The paper's Table 5 gives ballistics the same settings as the robot arm, and
so do we: this is the robot-arm config (see its docstring for where and why
it departs from the table); change here only what should differ.
"""

from experiments.configs import robot_arm


def get_config():
  return robot_arm.get_config()
