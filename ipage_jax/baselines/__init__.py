"""Baseline inverse methods sharing iPage's fit / solve shape."""
