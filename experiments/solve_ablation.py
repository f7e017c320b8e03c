r"""Phase-3 ablation: one cached model, several solve settings.

  python -m experiments.solve_ablation --workdir runs/bench_arch_w \
      --task architected --seeds 0-0 --num_solutions 100 \
      --setting 'clip_to_box=False oversample=1 localize_steps=500' \
      --setting 'clip_to_box=True oversample=10 localize_steps=0'
  python -m experiments.solve_ablation --workdir runs/bench --protocol a \
      --task robot_arm --seeds 5 --setting 'retries=0' --setting 'retries=1'

Loads `workdir/runs/<task>/<method>/seed<s>/model` (as
`experiments.benchmark` writes them), and for every `--setting` (space-
separated `key=value` overrides of the task config's `solve` section, values
as Python literals) solves and re-simulates the solutions with the task's
simulator. Training is not touched: this isolates what localization,
clipping, ranking and retries do with one posterior.

`--protocol b` (default): `--num_solutions` solutions for the task's default
and extra targets (or `--targets`; 1-D properties only) with the key
`PRNGKey(seed)`; the mean squared error Q_B and the mean +- std of the
re-simulated properties per target (architected: and the share of
connected cells), and each setting's cost: forward evaluations per
solution (FEM solves with `forward=simulator`) and wall time.

`--protocol a`: the benchmark's protocol A, one solution for each of the
run's held-out targets (the rows and the key `train.evaluate_protocols`
used, rebuilt from the model's config by `train.run_data`), the overrides
applied to the run's own `solve` section (the model's config: '' gives the
benchmark's Q_A); per setting the mean +- sample std over seeds of Q_A,
each seed's Q_A, the mean of the seeds' median errors, the worst target,
the solutions whose surrogate error (standardized) exceeds `accept_error`,
the solutions outside the task's design space (`Task.feasible`, e.g. the
architected porosity range; '–' for a task without one) and the gradient
evaluations per solution.

Prints a markdown table and writes it to
`workdir/solve_ablation_<task>_<method>.md` (`..._a.md` for protocol A).
"""

import importlib
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import benchmark
from experiments import runner
from experiments import train
from ipage_jax import checkpoint
from ipage_jax import evaluation
from ipage_jax import methods
from ipage_jax import metrics
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
_PROTOCOL = flags.DEFINE_enum(
    'protocol', 'b', ['a', 'b'], 'b: N solutions per target of --targets; '
    "a: one solution per held-out target of the benchmark's runs.")


def _models(workdir, task_name, method, seeds) -> dict:
  models = {}
  for seed in seeds:
    path = benchmark.find_model(workdir, task_name, method.name, seed)
    if path is None:
      raise runner.UsageError(f'no model of seed {seed} in {workdir}; run '
                              'experiments.benchmark first')
    models[seed] = methods.load_model(path, method.name)
  return models


def _base_solve(task_name):
  return importlib.import_module(
      f'experiments.configs.{task_name}').get_config().solve


def ablation_table(workdir, task_name, method_name, seeds, settings,
                   targets, num_solutions) -> str:
  """Markdown table: one row per setting, Q_B (and properties) per target,
  then the cost: forward evaluations per solution (`forward_evaluations`)
  and the solve's wall time, both means over targets and seeds
  (compilation included)."""
  task = tasks.get(task_name)
  method = methods.get(method_name)
  base = _base_solve(task_name)
  models = _models(workdir, task_name, method, seeds)
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
  candidates per solution x (steps + 1), retry rounds (`solve.retries`)
  not counted; 0 for a method that neither localizes nor ranks."""
  settings = run.method.solve_settings(model.config, solve_config)
  solver = train.routed_solver(run, model, settings)
  plan = solving.make_plan(model, solver, [target], num_solutions, settings)
  if not plan.localize:
    return 0.0
  return plan.num_draw / num_solutions * (settings.localize_steps + 1)


def heldout_targets(task, model, run_workdir: str
                    ) -> tuple[np.ndarray, jax.Array]:
  """(T, M) held-out targets of the benchmark run that fitted `model` and
  its protocol-A key (from the run's config: seed, data, held-out rows).

  The data are made as the benchmark made them: through the `prepare`
  hook of the task's script (the architected FEM cache of the run's
  config), in the run's workdir `run_workdir`.
  """
  config = model.config
  if not config.evaluate.heldout_targets:
    raise runner.UsageError('the model was not fitted with held-out '
                            'targets (evaluate.heldout_targets = 0)')
  prepare = benchmark.script_hooks(task.name).prepare
  if prepare is not None:
    task = prepare(train.Run(task, methods.get(model.method), config,
                             run_workdir)).task
  data = train.run_data(task, config)
  return data.y[data.held], train.protocol_keys(data.key_eval).a


def num_infeasible(task, x) -> int:
  """How many designs `x` (n, D) lie outside the task's design space
  (`Task.feasible`, which the task must have)."""
  return int(np.sum(~np.asarray(task.feasible(jnp.asarray(x)))))


def protocol_a_table(workdir, task_name, method_name, seeds, settings
                     ) -> str:
  """Markdown table: one row per setting, protocol A over seeds."""
  task = tasks.get(task_name)
  method = methods.get(method_name)
  models = _models(workdir, task_name, method, seeds)
  held = {seed: heldout_targets(
      task, models[seed],
      benchmark.run_dir(workdir, task_name, method_name, seed))
          for seed in seeds}
  rows = ['| solve setting | Q_A (mean ± std over seeds) | Q_A per seed | '
          'median | worst target | off the level set (surrogate) | outside '
          'the design space | gradient evaluations / solution |',
          '|---' * 8 + '|']
  for text in settings:
    q, median, worst, off, outside, steps = [], [], [], [], [], []
    for seed in seeds:
      targets, key = held[seed]
      model = models[seed]
      solve_config = train.override_solve(model.config.solve, text)
      sols = method.solve(model, key, targets, 1, solve_config=solve_config,
                          simulate=task.simulate, repair=task.repair,
                          feasible=task.feasible)
      record = evaluation.evaluate_solutions(
          task, sols, posterior=method.draws_posterior)
      q.append(record['resimulation_error'])
      median.append(record['resimulation_error_median'])
      steps.append(record['gradient_steps_per_solution'])
      worst.append(float(np.nanmax(metrics.resimulation_error(
          task.simulate, sols.x[:, 0], targets).per_sample)))
      diff = (model.y_scaler.forward(jnp.asarray(sols.y_surrogate[:, 0]))
              - model.y_scaler.forward(jnp.asarray(targets)))
      err_std = np.sum(np.square(np.asarray(diff)), -1)
      off.append(int(np.sum(err_std > solve_config.accept_error)))
      if task.feasible is not None:  # none: the column says '–'
        outside.append(num_infeasible(task, sols.x[:, 0]))
    per_seed = ', '.join(f'{v:.1e}' for v in q)
    rows.append(
        f'| `{text or "config"}` | {benchmark.format_cell(q)} | {per_seed} | '
        f'{np.mean(median):.2e} | {np.max(worst):.2e} | '
        f'{benchmark.format_cell(off, count=True)} | '
        f'{benchmark.format_cell(outside, count=True)} | '
        f'{np.mean(steps):.1f} |')
    print(rows[-1], flush=True)
  return '\n'.join(rows)


def main(argv):
  del argv
  seeds = benchmark.parse_seeds(FLAGS.seeds)
  task = tasks.get(_TASK.value)
  if task.simulate is None:
    raise runner.UsageError(f'task {task.name!r} has no simulator')
  method, settings = FLAGS.methods[0], _SETTINGS.value or ['']
  if _PROTOCOL.value == 'a':
    table = protocol_a_table(FLAGS.workdir, task.name, method, seeds,
                             settings)
  else:
    if task.y_dim != 1:
      raise runner.UsageError('protocol B here handles 1-D properties only')
    if _TARGETS.value:
      targets = [float(t) for t in _TARGETS.value]
    else:
      targets = [float(t[0]) for t in (task.default_target,
                                       *task.extra_targets)]
    table = ablation_table(FLAGS.workdir, task.name, method, seeds,
                           settings, targets, FLAGS.num_solutions)
  print(table)
  suffix = '_a' if _PROTOCOL.value == 'a' else ''
  path = os.path.join(FLAGS.workdir,
                      f'solve_ablation_{task.name}_{method}{suffix}.md')
  checkpoint.write_atomic(path, (table + '\n').encode())


if __name__ == '__main__':
  app.run(main)
