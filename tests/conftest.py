"""Test-wide JAX settings."""

import jax
import pytest

# `(n, d)` against `(d,)` broadcasting slips become errors instead of silently
# producing wrong shapes.
jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def parse(tmp_path):
  """Parses the experiment scripts' flags in-process (workdir in tmp_path);
  returns the workdir and restores the flags afterwards."""
  from experiments import runner  # defines the absl flags

  def _parse(*args):
    runner.FLAGS.unparse_flags()
    runner.FLAGS(['prog', f'--workdir={tmp_path / "run"}', *args])
    return tmp_path / 'run'

  yield _parse
  runner.FLAGS.unparse_flags()
