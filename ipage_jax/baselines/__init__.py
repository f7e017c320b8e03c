"""The methods iPage is compared with (the paper's comparison, its appendix B).

Each module defines a `SPEC` (see `common.Spec`); `ipage_jax.methods`
registers them as 'mdn', 'cinn', 'cvae' and 'na' next to 'ipage' and 'inn'
(the INN baseline is iPage's own network sampled without localization).
"""

from ipage_jax.baselines import cinn
from ipage_jax.baselines import common
from ipage_jax.baselines import cvae
from ipage_jax.baselines import mdn
from ipage_jax.baselines import na

SPECS = (mdn.SPEC, cinn.SPEC, cvae.SPEC, na.SPEC)

__all__ = ('SPECS', 'cinn', 'common', 'cvae', 'mdn', 'na')
