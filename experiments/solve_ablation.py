r"""Phase-3 ablation: one cached model, several solve settings, protocol B.

  python -m experiments.solve_ablation --workdir runs/bench_arch_w \
      --task architected --seeds 0-0 --num_solutions 100 \
      --setting 'clip_to_box=False oversample=1 localize_steps=500' \
      --setting 'clip_to_box=True oversample=10 localize_steps=0'

Loads `workdir/runs/<task>/<method>/seed<s>/model` (as
`experiments.benchmark` writes them), and for every `--setting` (space-
separated `key=value` overrides of the task config's `solve` section, values
as Python literals) solves for the task's default and extra targets (or
`--targets`) with the key `PRNGKey(seed)`, re-simulates the solutions with
the task's simulator and reports the mean squared error Q_B and the mean +-
std of the re-simulated properties (architected: and the share of connected
cells), and each setting's cost: forward evaluations per solution (FEM
solves with `forward=simulator`) and wall time. Training is not touched: this isolates
what localization, clipping and ranking do with one posterior. Prints a
markdown table and writes it to `workdir/solve_ablation_<task>_<method>.md`.
"""

import importlib
import os

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import benchmark
from experiments import runner
from experiments import train
from ipage_jax import checkpoint
from ipage_jax import methods
from ipage_jax import solving
from ipage_jax import tasks

# --workdir, --seeds, --num_solutions and --methods' first entry are the
# benchmark's flags (same meaning).
FLAGS = flags.FLAGS
_TASK = flags.DEFINE_string('task', 'architected', 'Task of the models.')
_SETTINGS = flags.DEFINE_multi_string(
    'setting', [], "Solve overrides, e.g. 'oversample=10 localize_steps=0'; "
    "'' = the config's own settings.")
_TARGETS = flags.DEFINE_list(
    'targets', [], 'Targets (1-D properties only); default: the default '
    'and extra targets of the task.')


def ablation_table(workdir, task_name, method_name, seeds, settings,
                   targets, num_solutions) -> str:
  """Markdown table: one row per setting, Q_B (and properties) per target,
  then the cost: forward evaluations per solution (`forward_evaluations`)
  and the solve's wall time, both means over targets and seeds
  (compilation included)."""
  task = tasks.get(task_name)
  method = methods.get(method_name)
  base = importlib.import_module(
      f'experiments.configs.{task_name}').get_config().solve
  models = {}
  for seed in seeds:
    path = benchmark.find_model(workdir, task_name, method_name, seed)
    if path is None:
      raise runner.UsageError(f'no model of seed {seed} in {workdir}; run '
                              'experiments.benchmark first')
    models[seed] = methods.load_model(path, method.name)
  header = (['solve setting'] + [f'y* = {t:g}' for t in targets]
            + ['forward evaluations / solution', 'time [s]'])
  rows = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
  for text in settings:
    solve_config = train.override_solve(base, text)
    cells, evals, seconds = [], [], []
    for target in targets:
      q, props, connected = [], [], []
      for seed in seeds:
        run = train.Run(task, method, models[seed].config, workdir)
        sols, tts = train.timed_solve(
            run, models[seed], jax.random.PRNGKey(seed), [target],
            num_solutions, label=f'{task_name} {text!r}',
            solve_config=solve_config)
        y = np.asarray(task.simulate(sols.x))[:, 0]
        q.append(np.mean((y - target) ** 2))
        props.append(y)
        evals.append(forward_evaluations(run, models[seed], target,
                                         num_solutions, solve_config))
        seconds.append(tts.total_s)
        if task.design_stats is not None:
          connected.append(task.design_stats(np.asarray(sols.x))['connected'])
      props = np.concatenate(props)
      cell = f'{np.mean(q):.2e} ({props.mean():.3f} +- {props.std():.3f}'
      if connected:
        cell += f'; connected {np.mean(connected):.2f}'
      cells.append(cell + ')')
    cells += [f'{np.mean(evals):.0f}', f'{np.mean(seconds):.1f}']
    rows.append(f'| `{text or "config"}` | ' + ' | '.join(cells) + ' |')
    print(rows[-1], flush=True)
  return '\n'.join(rows)


def forward_evaluations(run, model, target, num_solutions: int,
                        solve_config) -> float:
  """Evaluations of the forward model (the surrogate, or the simulator with
  `forward=simulator`) per returned solution: every candidate is evaluated
  with its gradient at each localization step and once more to be ranked,
  candidates per solution x (steps + 1); 0 for a method that neither
  localizes nor ranks."""
  settings = run.method.solve_settings(model.config, solve_config)
  solver = solving.with_route(run.method.solver(model), model, settings,
                              run.task.simulate)
  plan = solving.make_plan(model, solver, [target], num_solutions, settings)
  if not plan.localize:
    return 0.0
  return plan.num_draw / num_solutions * (settings.localize_steps + 1)


def main(argv):
  del argv
  seeds = benchmark.parse_seeds(FLAGS.seeds)
  task = tasks.get(_TASK.value)
  if task.simulate is None:
    raise runner.UsageError(f'task {task.name!r} has no simulator')
  if task.y_dim != 1:
    raise runner.UsageError('the ablation handles 1-D properties only')
  if _TARGETS.value:
    targets = [float(t) for t in _TARGETS.value]
  else:
    targets = [float(t[0]) for t in (task.default_target,
                                     *task.extra_targets)]
  table = ablation_table(FLAGS.workdir, task.name, FLAGS.methods[0], seeds,
                         _SETTINGS.value or [''], targets,
                         FLAGS.num_solutions)
  print(table)
  path = os.path.join(FLAGS.workdir,
                      f'solve_ablation_{task.name}_{FLAGS.methods[0]}.md')
  checkpoint.write_atomic(path, (table + '\n').encode())


if __name__ == '__main__':
  app.run(main)
