r"""Sinewave mode coverage of the harness's cached iPage models.

  python -m experiments.sinewave_coverage --workdir runs/bench \
      --seeds 0-4 --sizes 25 --rank_by surrogate,diversity

For every model `workdir/runs/sinewave/ipage/seed<s>/model` (as
`experiments.benchmark` writes them), every latent sampler, every Ns of
`--sizes` and every ranking of `--rank_by` (`solve.rank_by`, the rest of
the solve settings from the task's config), solves for y* = 1.2 with the
solve key `PRNGKey(seed)` folded with the sampler's index, and counts the
modes covered (`ipage_jax.evaluation.mode_coverage`, as
`experiments.sinewave` does). Prints one
markdown table (rows: ranking and sampler; columns: seeds) and writes it
to `workdir/sinewave_coverage.md`.
"""

import os

from absl import app
from absl import flags
import jax

from experiments import benchmark
from experiments import sinewave as sinewave_script
from experiments.configs import sinewave as sinewave_config
from ipage_jax import checkpoint
from ipage_jax import evaluation
from ipage_jax import methods
from ipage_jax import tasks
from ipage_jax.tasks import sinewave

# --workdir and --seeds are the benchmark's flags (same meaning).
FLAGS = flags.FLAGS
_SIZES = flags.DEFINE_list('sizes', ['25'], 'Solutions per solve (Ns).')
_RANK_BY = flags.DEFINE_list('rank_by', ['surrogate', 'diversity'],
                             'Values of solve.rank_by to compare.')


def coverage_table(workdir, seeds, sizes, rankings) -> str:
  """Markdown table of modes covered (of 9) and Q per cell."""
  method = methods.get('ipage')
  task = tasks.get('sinewave')
  target = float(sinewave.DEFAULT_TARGET[0])
  base = sinewave_config.get_config().solve
  header = ['ranking', 'sampler', 'Ns'] + [f'seed {s}' for s in seeds]
  rows = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
  models = {}
  for seed in seeds:
    path = benchmark.find_model(workdir, 'sinewave', 'ipage', seed)
    if path is None:
      raise app.UsageError(f'no model of seed {seed} in {workdir}; run '
                           'experiments.benchmark first')
    models[seed] = methods.load_model(path, method.name)
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
          cov = evaluation.mode_coverage(task, sols, posterior=False)
          q = evaluation.resimulation(task, sols.x, sols.y_target)[
              'resimulation_error']
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
  checkpoint.write_atomic(
      os.path.join(FLAGS.workdir, 'sinewave_coverage.md'),
      (table + '\n').encode())


if __name__ == '__main__':
  app.run(main)
