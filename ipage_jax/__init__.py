"""ipage_jax: inverse design with invertible networks, in JAX.

  model = ipage_jax.fit(key, x, y, config)
  sols = ipage_jax.solve(model, key, y_target, num_solutions=1000)

The building blocks live in their own modules: `flows`, `image_flows`
(convolutional blocks and a multi-scale INN on images), `losses`,
`schedules`, `training`, `sampling`, `localization`, `metrics`, `tasks`,
`parallel` (several devices or hosts).
"""

from ipage_jax.localization import localize
from ipage_jax.localization import make_localizer
from ipage_jax.pipeline import Model
from ipage_jax.pipeline import Solutions
from ipage_jax.pipeline import default_config
from ipage_jax.pipeline import fit
from ipage_jax.pipeline import load_model
from ipage_jax.pipeline import save_model
from ipage_jax.pipeline import solve
from ipage_jax.sampling import lhs
from ipage_jax.sampling import maximin_lhs
from ipage_jax.sampling import srs

__version__ = '0.1.0'

__all__ = (
    'Model',
    'Solutions',
    'default_config',
    'fit',
    'lhs',
    'load_model',
    'localize',
    'make_localizer',
    'maximin_lhs',
    'save_model',
    'solve',
    'srs',
)
