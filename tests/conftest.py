"""Test-wide JAX settings."""

import jax

# `(n, d)` against `(d,)` broadcasting slips become errors instead of silently
# producing wrong shapes.
jax.config.update('jax_numpy_rank_promotion', 'raise')
