"""ipage_jax: inverse design with invertible networks, in JAX.

  model = ipage_jax.fit(key, x, y, config)
  sols = ipage_jax.solve(model, key, y_target, num_solutions=1000)

One module per phase: `training` (phase 1), `sampling` (space-filling
latent designs), `localization` (batched Adam), `ranking` (which candidates
are kept), `solving` (phases 2 and 3 for any method), `evaluation`
(protocols A and B, r_T, re-simulation). Besides: `flows`, `image_flows`
(convolutional blocks and a multi-scale INN on images), `losses`,
`schedules`, `metrics` (incl. posterior calibration), `methods` (iPage and
the baselines), `model` (the fitted model of every method), `checkpoint`,
`tasks`, `parallel`.
"""

from ipage_jax.localization import localize
from ipage_jax.localization import make_localizer
from ipage_jax.methods import load_model
from ipage_jax.model import Model
from ipage_jax.model import save_model
from ipage_jax.pipeline import default_config
from ipage_jax.pipeline import fit
from ipage_jax.pipeline import solve
from ipage_jax.sampling import lhs
from ipage_jax.sampling import maximin_lhs
from ipage_jax.sampling import srs
from ipage_jax.solving import SolveSettings
from ipage_jax.solving import Solutions
from ipage_jax.solving import solve_settings

__version__ = '0.1.0'

__all__ = (
    'Model',
    'SolveSettings',
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
    'solve_settings',
    'srs',
)
