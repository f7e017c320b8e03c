r"""MoS2 band-gap inverse design on real DFT data (Fung et al. 2021).

  python -m experiments.mos2 --workdir runs/mos2 [--target 0.5]

Re-simulation is against an oracle (an MLP ensemble trained on all DFT rows;
`python -m experiments.train_oracle` trains and caches it with its k-fold
error, otherwise the first run trains it), so every re-simulation figure is
labelled "vs oracle" and reported with the oracle's held-out error. Targets
below 0 or above the data's largest gap are refused; a target with few DFT
rows nearby gets a warning. `--help` lists the flags and the config fields
behind them.
"""

import os

from absl import app
import numpy as np

from experiments import runner
from experiments import train
from ipage_jax import plotting
from ipage_jax.tasks import mos2


def report(run, model, sols, key) -> dict:
  """Oracle error beside the figures; generated vs training lattices."""
  del model, key
  out = {'oracle_kfold': (mos2.oracle_report() or {}).get('kfold')}
  x_data, _ = mos2.load_data()
  x = np.asarray(sols.x).reshape(-1, mos2.X_DIM)
  out['solution_spread'] = dict(zip(mos2.X_NAMES, np.std(x, 0).tolist()))
  fig = plotting.marginals(
      {'training data': x_data, f'{run.method.name} solutions': x},
      mos2.X_NAMES,
      title=f'MoS2 designs for band gap {np.ravel(sols.y_target)[0]:g} eV '
            '(re-simulated vs oracle)')
  fig.savefig(os.path.join(run.workdir, 'mos2_parameters.png'), dpi=110)
  return out


HOOKS = train.Hooks(report=report, check_targets=mos2.check_target)

if __name__ == '__main__':
  app.run(runner.make_main('mos2', HOOKS))
