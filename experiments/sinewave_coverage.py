r"""Sinewave mode coverage of the harness's cached iPage models.

  python -m experiments.sinewave_coverage --workdir runs/bench \
      --seeds 0-4 --sizes 25 --rank_by surrogate,diversity

For every cached model `workdir/models/sinewave/ipage/seed<s>.msgpack` (as
`experiments.benchmark` writes them), every latent sampler, every Ns of
`--sizes` and every ranking of `--rank_by` (`solve.rank_by`, the rest of
the solve settings from the task's config), solves for y* = 1.2 with the
solve key `PRNGKey(seed)` folded with the sampler's index, and counts the
modes covered (SPEC section 5, as `experiments.sinewave` does). Prints one
markdown table (rows: ranking and sampler; columns: seeds) and writes it
to `workdir/sinewave_coverage.md`.
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import benchmark
from experiments import runner
from experiments import sinewave as sinewave_script
from experiments.configs import sinewave as sinewave_config
from ipage_jax import methods
from ipage_jax.tasks import sinewave

# --workdir and --seeds are the benchmark's flags (same meaning).
FLAGS = flags.FLAGS
_SIZES = flags.DEFINE_list('sizes', ['25'], 'Solutions per solve (Ns).')
_RANK_BY = flags.DEFINE_list('rank_by', ['surrogate', 'diversity'],
                             'Values of solve.rank_by to compare.')


def coverage_table(workdir, seeds, sizes, rankings) -> str:
  """Markdown table of modes covered (of 9) and Q per cell."""
  method = methods.get('ipage')
  target = float(sinewave.DEFAULT_TARGET[0])
  base = sinewave_config.get_config().solve
  header = ['ranking', 'sampler', 'Ns'] + [f'seed {s}' for s in seeds]
  rows = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
  models = {}
  for seed in seeds:
    path = benchmark.model_path(workdir, 'sinewave', 'ipage', seed)
    if not os.path.exists(path):
      raise app.UsageError(f'no cached model {path}; run '
                           'experiments.benchmark first')
    models[seed] = method.load(path)
  for rank_by in rankings:
    solve_config = base.copy_and_resolve_references()
    solve_config.rank_by = rank_by
    for i, sampler in enumerate(sinewave_script.SAMPLERS):
      for n in sizes:
        cells = []
        for seed in seeds:
          key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
          sols = method.solve(models[seed], key, [target], n, sampler,
                              solve_config=solve_config)
          cov = sinewave_script.coverage(sols.x, target)
          q = float(np.mean((np.asarray(sinewave.simulate(sols.x))[:, 0]
                             - target) ** 2))
          cells.append(f'{cov["modes_covered"]}/9, Q {q:.1e}')
        rows.append(f'| {rank_by} | {sampler} | {n} | '
                    + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def main(argv):
  del argv
  seeds = benchmark.parse_seeds(FLAGS.seeds)
  table = coverage_table(FLAGS.workdir, seeds,
                         [int(n) for n in _SIZES.value], _RANK_BY.value)
  print(table)
  runner.write_atomic(os.path.join(FLAGS.workdir, 'sinewave_coverage.md'),
                      (table + '\n').encode())


if __name__ == '__main__':
  app.run(main)
