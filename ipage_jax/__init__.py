"""ipage_jax: inverse design with invertible networks, in JAX."""
