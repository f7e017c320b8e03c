r"""Benchmark harness: the paper's Tables 2 and 3 and its Fig. 7.

  python -m experiments.benchmark --workdir runs/bench \
      --tasks sinewave,robot_arm,ballistics --methods ipage,inn --seeds 5
  python -m experiments.benchmark --workdir runs/bench_quick --quick

For each task, seed and method one `train.train_and_evaluate` run (the task
scripts' function) with the benchmark's protocols switched on in its
`evaluate` section: the task's data set (key from the seed; the same rows
for every method), `--num_targets` rows held out and never trained on, the
method's `fit` on the rest, then
  protocol A (Table 2): one solution for each held-out y, solved in one
    batched call, re-simulation error against those y;
  protocol B (Table 3): `--num_solutions` solutions for the task's default
    target; re-simulation error, diversity (mean pairwise distance) and
    time to solution (inference and localization seconds of a second, warm
    call: the first one compiles; its times are kept as `*_cold`);
  for methods whose candidates are posterior samples (all but NA), the
    re-simulation error of those samples before localization, next to the
    final one, in both protocols;
  mode coverage (sinewave): the modes reached by 200 solutions and by 200
    posterior samples;
  r_T (Ren et al. 2020): `--rt_max` proposals for each of the first
    `--rt_targets` held-out targets; the best re-simulation error among the
    first T, averaged over targets (methods that localize through a
    surrogate propose best-first by it, as NA keeps its best T);
  steps to accuracy: for methods that localize (ipage, na), protocol B again
    (`--steps_solutions` solutions) at every localization budget of
    `--steps_grid`; the report says how many
    surrogate gradient evaluations per solution each needs to reach the
    other's final error.
Every run also records the parameter count and the gradient evaluations per
solution. Re-simulation uses the task's simulator; tasks without one are
skipped, and an oracle's figures are labelled "vs oracle".

Each run's outputs are those of a task script, in
`workdir/runs/<task>/<method>/seed<s>/` (config.json, model/ with its
fingerprint model.json, metrics.json: the run's record, solutions.npz: the
protocol-B solutions); a rerun with the same settings only evaluates.
Methods sharing one `fit` (ipage and inn) train once per task and seed.

Writes (atomically, after every run) `workdir/results.json` (every number of
every seed), `workdir/results.md` (tables: rows = methods, columns = tasks,
cells mean +- sample standard deviation over seeds),
`workdir/time_to_solution.png`, `r_t.png` and `steps_to_accuracy.png`.
A `results.json` of an earlier version is read as well: its runs stay in the
tables while their settings are unchanged. `--seeds` is a count (`5`: seeds
0-4) or a list (`0,3,7`). `--quick` uses the tasks' tiny settings and, unless
given, 100 targets, 100 solutions and r_T on 20 targets up to T = 10.
`--workdir`, `--num_solutions`, `--epochs`, `--sampler` and `--quick` are the
per-task scripts' flags; their `--method`, `--target`, `--target_file`,
`--seed` and `--reuse_checkpoint` do not apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from experiments import architected as architected_script
from experiments import ballistics as ballistics_script
from experiments import runner
from experiments import train
from ipage_jax import checkpoint
from ipage_jax import methods
from ipage_jax import plotting
from ipage_jax import tasks
from ipage_jax.tasks import robot_arm as robot_arm_task
from ipage_jax.tasks import sinewave as sinewave_task

flags.DEFINE_list('tasks', ['sinewave', 'robot_arm', 'ballistics'],
                  f'Tasks, from {tasks.NAMES}.')
flags.DEFINE_list('methods', ['ipage', 'inn'],
                  'Methods (any registered name, see ipage_jax.methods).')
flags.DEFINE_list('seeds', ['5'], 'A count n (seeds 0..n-1), a list, '
                  'or ranges a-b (inclusive; 3-3 is seed 3 alone).')
flags.DEFINE_integer('num_targets', 1000,
                     'Protocol A: held-out targets, one solution each.')
flags.DEFINE_integer('rt_targets', 100,
                     'r_T: held-out targets (the first of protocol A).')
flags.DEFINE_integer('rt_max', 50, 'r_T: proposals per target (largest T).')
flags.DEFINE_integer('steps_solutions', 200,
                     'Solutions of the default target per point of the '
                     'steps-to-accuracy curve.')
flags.DEFINE_list('steps_grid', ['0', '10', '30', '100', '300', '1000'],
                  'Localization steps at which methods that localize are '
                  're-run on protocol B (the steps-to-accuracy curve); '
                  'empty: skip.')

FLAGS = flags.FLAGS
NUM_SOLUTIONS = 1000      # protocol B (unless --num_solutions)
QUICK_SIZE = 100          # protocol sizes under --quick (unless given)
QUICK_RT = (20, 10)       # r_T targets and largest T under --quick
_NOT_USED = ('method', 'target', 'target_file', 'seed', 'reuse_checkpoint')
# (results key, table title) of the tables in results.md.
TABLES = (
    ('protocol_a/resimulation_error',
     'Table 2: re-simulation error, protocol A (one solution per held-out '
     'target)'),
    ('protocol_b/resimulation_error',
     'Table 3: re-simulation error, protocol B (default target)'),
    ('protocol_a/posterior_resimulation_error',
     'Posterior samples before localization: re-simulation error, protocol '
     'A'),
    ('protocol_b/posterior_resimulation_error',
     'Posterior samples before localization: re-simulation error, protocol '
     'B'),
    ('mode_coverage/modes_covered',
     'Modes covered by 200 solutions (sinewave, of 9)'),
    ('mode_coverage/posterior_modes_covered',
     'Modes covered by 200 posterior samples (sinewave, of 9)'),
    ('protocol_b/total_s', 'Time to solution [s], protocol B (inference + '
     'localization, warm)'),
    ('protocol_b/diversity', 'Diversity, protocol B (mean pairwise distance)'),
    ('protocol_b/design/binary_pixels', 'Designs, protocol B: share of '
     'pixels within 0.05 of 0 or 1 (architected)'),
    ('protocol_b/design/porosity_mean', 'Designs, protocol B: mean porosity '
     '(architected)'),
    ('protocol_b/design/connected', 'Designs, protocol B: share of cells '
     'with >= 95 % of their solid in one periodic component (architected)'),
    ('protocol_a/design/connected', 'Designs, protocol A: share of cells '
     'with >= 95 % of their solid in one periodic component (architected)'),
    ('protocol_b/gradient_steps_per_solution',
     'Surrogate gradient evaluations per solution, protocol B (localization '
     'steps x candidates per kept solution)'),
    ('r_t/last', 'r_T at the largest T (best re-simulation error of T '
     'proposals per target, Ren et al. 2020)'),
    ('num_params', 'Trainable parameters'),
)
# Counts, written as numbers with one decimal (not in e-notation).
COUNTS = ('mode_coverage/modes_covered',
          'mode_coverage/posterior_modes_covered')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every (task, method, seed) run shares."""
  workdir: str
  num_targets: int
  num_solutions: int
  rt_targets: int = 0            # 0: no r_T curve
  rt_max: int = 1
  steps_grid: tuple[int, ...] = ()
  steps_solutions: int = 200


def parse_seeds(values: Sequence[str]) -> list[int]:
  """`['5']` -> [0, ..., 4]; `['0', '3']` -> [0, 3]; `['2-4']` -> [2, 3, 4]."""
  if len(values) == 1 and '-' not in values[0]:
    try:
      count = int(values[0])
    except ValueError:
      raise runner.UsageError(f'--seeds must be integers, got {values}')
    if count < 1:
      raise runner.UsageError(f'--seeds count must be >= 1, got {count}')
    return list(range(count))
  seeds = []
  try:
    for v in values:
      first, _, last = v.partition('-')
      seeds += list(range(int(first), int(last or first) + 1))
  except ValueError:
    raise runner.UsageError(f'--seeds must be integers or ranges a-b, got '
                            f'{values}')
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise runner.UsageError(f'--seeds must be distinct and >= 0: {values}')
  return seeds


def run_dir(workdir: str, task: str, method: str, seed: int) -> str:
  """The workdir of one run (as a task script's --workdir)."""
  return os.path.join(workdir, 'runs', task, method, f'seed{seed}')


def model_path(workdir: str, task: str, method: str, seed: int) -> str:
  """The model of one run (its fingerprint: `model.json` beside it)."""
  return os.path.join(run_dir(workdir, task, method, seed), train.MODEL)


def find_model(workdir: str, task: str, method: str, seed: int
               ) -> Optional[str]:
  """The model of one run, or of a workdir of an earlier version
  (`models/<task>/<method>/seed<s>.msgpack`); None when there is none."""
  for path in (model_path(workdir, task, method, seed),
               os.path.join(workdir, 'models', task, method,
                            f'seed{seed}.msgpack')):
    if os.path.exists(path):
      return path
  return None


def solutions_path(workdir: str, task: str, method: str, seed: int) -> str:
  """Protocol-B solutions of one run (npz: x, x_posterior, ...)."""
  return os.path.join(run_dir(workdir, task, method, seed), 'solutions.npz')


def run_config(config: ml_collections.ConfigDict, task: str, method: str,
               seed: int, donors: Sequence[str], settings: Settings
               ) -> ml_collections.ConfigDict:
  """The config of one (task, method, seed) run of the benchmark."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = seed
  c.run.task = task
  c.run.method = method
  c.run.num_solutions = settings.num_solutions
  c.run.reuse_model = True
  c.run.donors = list(donors)
  c.evaluate.heldout_targets = settings.num_targets
  c.evaluate.rt_targets = settings.rt_targets
  c.evaluate.rt_max = settings.rt_max
  c.evaluate.steps_grid = tuple(settings.steps_grid)
  c.evaluate.steps_solutions = settings.steps_solutions
  if c.run.task == architected_script.NAME:  # one FEM data set for all
    c.data_cache = architected_script.data_cache_path(
        c, os.path.join(settings.workdir, 'data'))
  return c


def run_benchmark(jobs: dict, method_list: Sequence[methods.Method],
                  seeds: Sequence[int], settings: Settings) -> dict:
  """Runs every (task, seed, method); writes the results after each run.

  Args:
    jobs: task name -> its config (`--quick` etc. applied).
    method_list: the methods to compare.
    seeds: root seeds.
    settings: workdir and protocol sizes.

  Returns:
    The results (as in results.json): 'settings', 'runs', 'skipped'.
  """
  info = dict(dataclasses.asdict(settings), tasks=list(jobs),
              seeds=list(seeds), methods=[m.name for m in method_list])
  digests = {name: config_digest(config) for name, config in jobs.items()}
  kept = earlier_runs(settings, digests,
                      {(t, m.name, s) for t in jobs for m in method_list
                       for s in seeds})
  for key, values in (('tasks', [r['task'] for r in kept]),
                      ('methods', [r['method'] for r in kept]),
                      ('seeds', [r['seed'] for r in kept])):
    info[key] = list(dict.fromkeys(info[key] + list(values)))
  if kept:  # one order whatever the order of the invocations
    order = {'tasks': tasks.NAMES, 'methods': methods.NAMES}
    for key, names in order.items():
      info[key].sort(key=lambda n: names.index(n) if n in names else 99)
  info['seeds'] = sorted(info['seeds'])
  results = {'settings': info, 'runs': list(kept), 'skipped': []}
  runnable = {}
  for name, config in jobs.items():
    if tasks.get(name).simulate is None:
      results['skipped'].append({'task': name, 'reason': 'no simulator'})
      logging.warning('Skipping %s: it has no simulator', name)
    else:
      runnable[name] = config
  task_map = {n: tasks.get(n) for n in info['tasks']
              if n in runnable or n not in jobs}
  total = len(runnable) * len(seeds) * len(method_list)
  count = 0
  for name, config in runnable.items():
    hooks = train.Hooks(prepare=script_hooks(name).prepare)
    for seed in seeds:
      for method in method_list:
        count += 1
        logging.info('[%d/%d] %s/%s/seed%d', count, total, name,
                     method.name, seed)
        donors = [model_path(settings.workdir, name, m.name, seed)
                  for m in method_list if m.name != method.name
                  and m.fit is method.fit]
        run = train.train_and_evaluate(
            run_config(config, name, method.name, seed, donors, settings),
            run_dir(settings.workdir, name, method.name, seed), hooks)
        run['config_digest'] = digests[name]
        logging.info('[%d/%d] %s/%s/seed%d: Q_A = %.3g, Q_B = %.3g, time '
                     '%.3g s', count, total, name, method.name, seed,
                     run['protocol_a']['resimulation_error'],
                     run['protocol_b']['resimulation_error'],
                     run['protocol_b']['total_s'])
        results['runs'].append(run)
        write_outputs(settings.workdir, results, task_map)
  if not results['runs']:
    write_outputs(settings.workdir, results, {})
  return results


def script_hooks(task_name: str) -> train.Hooks:
  """The `HOOKS` of the task's script (`experiments/<task>.py`)."""
  return importlib.import_module(f'experiments.{task_name}').HOOKS


def config_digest(config: ml_collections.ConfigDict) -> str:
  """A short hash of a task's settings (runs with equal digests compare)."""
  text = json.dumps(train.as_json(train.result_settings(config)),
                    sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def earlier_runs(settings: Settings, digests: dict, redo: set) -> list:
  """Runs of an earlier invocation in the same workdir that still count.

  A run is kept when that invocation had the same protocol settings, its
  task's config is unchanged (or the task is not re-run now) and it is not
  one of the (task, method, seed) runs of this invocation (`redo`), so
  `--seeds=0` then `--seeds=1` give a table over both seeds.
  """
  old = train.read_json(os.path.join(settings.workdir, 'results.json'))
  if not old:
    return []
  if not (isinstance(old, dict) and isinstance(old.get('settings'), dict)
          and isinstance(old.get('runs'), list)):
    raise runner.UsageError(
        f'{settings.workdir}/results.json is not a results file of '
        'experiments.benchmark; move it away or use another --workdir')
  mine = train.as_json(dataclasses.asdict(settings))
  theirs = {k: old['settings'].get(k) for k in mine}
  if theirs != mine:
    logging.info('Earlier results in %s used other protocol settings; '
                 'they are replaced', settings.workdir)
    return []
  return [r for r in old['runs']
          if (r['task'], r['method'], r['seed']) not in redo
          and r.get('config_digest') == digests.get(
              r['task'], r.get('config_digest'))]


def _value(run: dict, key: str):
  """The number at '/'-separated `key` in a run record (None: absent)."""
  value = run
  for part in key.split('/'):
    if not isinstance(value, dict) or part not in value:
      return None
    value = value[part]
  return value


def format_cell(values: Sequence[float], num_seeds: int = 0,
                count: bool = False) -> str:
  """'mean ± std' (sample std, scientific); one value: just it; none: '–'.

  A cell over fewer values than `num_seeds` (the seeds of the whole table)
  says how many it has, e.g. '1.00e-03 ± 2.0e-04 (n = 2)'. `count`: the
  values are counts, written with one decimal ('8.5 ± 0.7').
  """
  values = np.asarray(values, float)
  if values.size == 0:
    return '–'
  mean_fmt, std_fmt = ('.1f', '.1f') if count else ('.2e', '.1e')
  if values.size == 1:
    cell = f'{values[0]:{"g" if count else mean_fmt}}'
  else:
    cell = (f'{np.mean(values):{mean_fmt}} ± '
            f'{np.std(values, ddof=1):{std_fmt}}')
  if values.size < num_seeds:
    cell += f' (n = {values.size})'
  return cell


def run_seeds(runs: Sequence[dict]) -> list[int]:
  """The seeds that occur in `runs`, sorted."""
  return sorted({r['seed'] for r in runs})


def column_label(task: tasks.Task) -> str:
  """A table column / figure panel name; oracle-based ones say so."""
  if task.simulator_kind == 'oracle':
    return f'{task.name} (vs oracle)'
  return task.name


def format_table(runs: Sequence[dict], key: str,
                 task_list: Sequence[tasks.Task],
                 method_names: Sequence[str]) -> str:
  """A markdown table: rows = methods, columns = tasks, cells over seeds.

  Args:
    runs: per-run records (results.json 'runs').
    key: '/'-separated path of the number in a run, e.g.
      'protocol_a/resimulation_error'.
    task_list: the columns.
    method_names: the rows.
  """
  lines = ['| method | ' + ' | '.join(column_label(t) for t in task_list)
           + ' |', '|---' * (len(task_list) + 1) + '|']
  num_seeds = len(run_seeds(runs))
  for m in method_names:
    cells = [format_cell([v for r in runs
                          if r['method'] == m and r['task'] == t.name
                          and (v := _value(r, key)) is not None], num_seeds,
                         count=key in COUNTS)
             for t in task_list]
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def format_extra_targets_table(runs: Sequence[dict],
                               task_list: Sequence[tasks.Task],
                               method_names: Sequence[str]) -> str:
  """Protocol-B error at the tasks' extra targets; '' when none has any.

  Rows = methods; one column per (task, extra target).
  """
  columns = [(t, i, target) for t in task_list
             for i, target in enumerate(t.extra_targets)]
  if not columns:
    return ''
  label = lambda t, target: (f"{column_label(t)}, y* = "
                             f"{', '.join(f'{v:g}' for v in target)}")
  lines = ['| method | ' + ' | '.join(label(t, g) for t, _, g in columns)
           + ' |', '|---' * (len(columns) + 1) + '|']
  num_seeds = len(run_seeds(runs))
  for m in method_names:
    cells = [format_cell([r['protocol_b_extra'][i]['resimulation_error']
                          for r in runs
                          if r['method'] == m and r['task'] == t.name
                          and len(r.get('protocol_b_extra', ())) > i],
                         num_seeds)
             for t, i, _ in columns]
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def format_report(results: dict, task_list: Sequence[tasks.Task]) -> str:
  """results.md: settings, the tables and the time-to-solution figure."""
  s = results['settings']
  runs = results['runs']
  method_names = s['methods']
  out = ['# Benchmark results', '',
         f"Seeds {run_seeds(runs)}; protocol A: {s['num_targets']} held-out "
         f"targets, one solution each; protocol B: the default target, "
         f"{s['num_solutions']} solutions. Cells: mean ± sample standard "
         'deviation over the seeds (one seed: the value); "(n = k)": a '
         'cell over fewer seeds, k of them.', '']
  for key, title in TABLES:
    columns = [t for t in task_list if any(
        r['task'] == t.name and _value(r, key) is not None for r in runs)]
    if columns:  # e.g. no posterior columns in results of earlier versions
      out += [f'## {title}', '', format_table(runs, key, columns,
                                              method_names), '']
  extra = format_extra_targets_table(runs, task_list, method_names)
  if extra:
    out += ['## Table 3, further targets: re-simulation error, protocol B',
            '', extra, '']
  if any(t.name == architected_script.NAME for t in task_list):
    out += ['Note: architected uses one cached FEM data set for every seed '
            '(the seed changes the held-out split, training and sampling).',
            '']
  for skip in results['skipped']:
    out.append(f"Skipped {skip['task']}: {skip['reason']}.")
  out += ['', '![time to solution](time_to_solution.png)', '']
  for t in task_list:
    if t.name in ('sinewave', 'robot_arm', 'ballistics'):
      out += [f'![{t.name} solutions](solutions_{t.name}.png)', '']
  if any('r_t' in r for r in runs):
    out += ['## r_T curves', '', '![r_T](r_t.png)', '']
  comparison = steps_comparison(runs, task_list)
  if comparison:
    out += ['## Localization budget to reach a given error (protocol B)', '',
            'Surrogate gradient evaluations per solution (steps x '
            'candidates per kept solution) that each method needs to reach '
            "the other's final error, read off the mean curves over the "
            'seeds that have both methods (first grid point at or below '
            'it; ">" = not reached on the grid).', '', *comparison, '',
            '![steps to accuracy](steps_to_accuracy.png)', '']
  return '\n'.join(out)


def mean_curve(runs: Sequence[dict], task: str, method: str, key: str,
               x_key: str, seeds: Optional[Sequence[int]] = None
               ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(x, mean over seeds of y) of the runs' `key` curves, or None.

  `seeds`: only the runs of these seeds (None: every seed).
  """
  curves = [r[key] for r in runs if r['task'] == task
            and r['method'] == method and key in r
            and (seeds is None or r['seed'] in seeds)]
  if not curves:
    return None
  x = np.asarray(curves[0][x_key], float)
  y_name = 'r_t' if key == 'r_t' else 'resimulation_error'
  return x, np.mean([np.asarray(c[y_name], float) for c in curves], axis=0)


def budget_to_reach(curve: tuple[np.ndarray, np.ndarray],
                    level: float) -> Optional[float]:
  """The smallest budget on the curve whose error is <= level (None: none)."""
  budget, error = curve
  hits = np.flatnonzero(error <= level)
  return float(budget[hits[0]]) if hits.size else None


def steps_comparison(runs: Sequence[dict],
                     task_list: Sequence[tasks.Task]) -> list[str]:
  """Markdown rows: iPage vs NA budgets to reach each other's final error.

  Both mean curves are over the seeds that have both methods' curves, so
  the two sides of a row always compare the same trainings' data.
  """
  lines = []
  for t in task_list:
    seeds = sorted(set.intersection(*(
        {r['seed'] for r in runs if r['task'] == t.name
         and r['method'] == m and 'steps_curve' in r}
        for m in ('ipage', 'na'))))
    if not seeds:
      continue
    curves = {m: mean_curve(runs, t.name, m, 'steps_curve',
                            'gradient_steps_per_solution', seeds)
              for m in ('ipage', 'na')}
    if not lines:
      lines = ['| task | seeds | NA final Q | iPage steps to it | NA steps | '
               'ratio | iPage final Q | NA steps to it | iPage steps |',
               '|---|---|---|---|---|---|---|---|---|']
    cells = [column_label(t), ', '.join(map(str, seeds))]
    for a, b in (('ipage', 'na'), ('na', 'ipage')):
      level = float(curves[b][1][-1])
      need = budget_to_reach(curves[a], level)
      own = float(curves[b][0][-1])
      if need is None:
        need_text, ratio = f'> {curves[a][0][-1]:.0f}', '–'
      else:
        need_text = f'{need:.0f}'
        ratio = f'{own / need:.1f}x' if need > 0 else 'at 0 steps'
      cells += [f'{level:.2e}', need_text, f'{own:.0f}']
      if a == 'ipage':
        cells.append(ratio)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def curve_figure(results: dict, task_list: Sequence[tasks.Task], key: str):
  """r_T (key='r_t') or steps-to-accuracy ('steps_curve') figure, or None."""
  x_key = 't' if key == 'r_t' else 'gradient_steps_per_solution'
  panels = {}
  for t in task_list:
    lines = {}
    for m in results['settings']['methods']:
      curve = mean_curve(results['runs'], t.name, m, key, x_key)
      if curve is not None:
        lines[m] = curve
    if lines:
      panels[column_label(t)] = lines
  if not panels:
    return None
  if key == 'r_t':
    return plotting.curves(panels, xlabel='T (proposals per target)',
                           ylabel='r_T (mean over seeds)',
                           title='Best-of-T error')
  return plotting.curves(panels, xlabel='gradient evaluations per solution',
                         ylabel='protocol-B error (mean over seeds)',
                         title='Error vs localization budget')


def time_figure(results: dict, task_list: Sequence[tasks.Task]):
  """The Fig. 7 bar chart of mean protocol-B times per task and method."""
  times = {}
  for t in task_list:
    per = {}
    for m in results['settings']['methods']:
      rs = [r['protocol_b'] for r in results['runs']
            if r['task'] == t.name and r['method'] == m]
      if rs:
        per[m] = (np.mean([r['inference_s'] for r in rs]),
                  np.mean([r['localization_s'] for r in rs]))
    times[column_label(t)] = per
  n = results['settings']['num_solutions']
  return plotting.time_to_solution(
      times, title=f'Time to {n} solutions (protocol B, mean over seeds)')


def _lowest_seed_solutions(workdir: str, task: str, method: str):
  folder = os.path.dirname(run_dir(workdir, task, method, 0))
  seeds = sorted(int(f[len('seed'):]) for f in
                 (os.listdir(folder) if os.path.isdir(folder) else [])
                 if f.startswith('seed') and os.path.exists(
                     solutions_path(workdir, task, method, int(f[4:]))))
  if not seeds:
    return None
  with np.load(solutions_path(workdir, task, method, seeds[0])) as f:
    return seeds[0], f['x'], f['x_posterior']


def solutions_figure(workdir: str, task: tasks.Task,
                     method_names: Sequence[str], data_rows: int = 0):
  """Protocol-B solutions of every method side by side (paper Fig. 4).

  One panel per method (its lowest seed), drawn as the task's scripts do:
  sinewave points over the level set, robot arms, ballistic flight paths,
  architected cells (the first few, with their FEM modulus; below them the
  data cells nearest the target, read from the benchmark's cache of
  `data_rows` cells). None for other tasks or when no solutions are saved.
  """
  found = {m: _lowest_seed_solutions(workdir, task.name, m)
           for m in method_names}
  found = {m: v for m, v in found.items() if v is not None}
  if not found or task.name not in ('sinewave', 'robot_arm', 'ballistics',
                                    architected_script.NAME):
    return None
  target = np.asarray(task.default_target, np.float32)
  label = lambda m: f'{m} (seed {found[m][0]})'
  title = (f'{task.name}: protocol-B solutions for y* = '
           f'({", ".join(f"{v:g}" for v in target)})')
  if task.name == architected_script.NAME:
    rows = []
    for m, (_, x, _) in found.items():
      shown = x[:architected_script.NUM_SHOWN]
      y = np.asarray(task.simulate(shown))[:, 0]
      rows.append((label(m), architected_script.as_cells(shown),
                   [f'FEM {v:.3f}' for v in y]))
    if data_rows:  # the benchmark's cache (`run_config`), if still there
      data = architected_script.data_cache_path(
          ml_collections.ConfigDict({'data_size': data_rows}),
          os.path.join(workdir, 'data'))
      if os.path.exists(data):
        rows.append(architected_script.nearest_data_row(data, data_rows,
                                                        target))
    return plotting.cell_grid(rows, title=title)
  if task.name == 'sinewave':
    panels = {}
    for m, (_, x, x_post) in found.items():
      q = float(np.mean((np.asarray(task.simulate(x))[:, 0] - target[0])
                        ** 2))
      panels[('', label(m))] = {
          'x': x, 'x_posterior': None if np.array_equal(x, x_post)
          else x_post, 'label': f'Q = {q:.1e}'}
    return plotting.solution_grid_2d(
        panels, [''], [label(m) for m in found],
        lambda g: np.asarray(task.simulate(g))[:, 0], float(target[0]),
        (sinewave_task.LOWER, sinewave_task.UPPER), title=title)
  if task.name == 'robot_arm':
    return plotting.arm_configurations(
        {label(m): robot_arm_task.joint_positions(v[1])
         for m, v in found.items()}, target, title=title)
  return plotting.trajectories(
      {label(m): ballistics_script.flight_paths(v[1])
       for m, v in found.items()}, float(target[0]), title=title)


def cached_data_rows(results: dict, task_name: str) -> int:
  """Rows of the task's data set as the benchmark cached it: the training
  rows of its runs plus the held-out protocol-A targets (0: no run)."""
  rows = [r.get('train_rows', 0) for r in results['runs']
          if r['task'] == task_name]
  return max(rows) + results['settings']['num_targets'] if rows else 0


def write_outputs(workdir: str, results: dict, task_map: dict) -> None:
  """results.json, results.md and time_to_solution.png (atomically)."""
  os.makedirs(workdir, exist_ok=True)
  train.write_json(os.path.join(workdir, 'results.json'), results)
  task_list = list(task_map.values())
  checkpoint.write_atomic(os.path.join(workdir, 'results.md'),
                      format_report(results, task_list).encode())
  if task_list:
    figures = {f'solutions_{t.name}.png': solutions_figure(
        workdir, t, results['settings']['methods'],
        cached_data_rows(results, t.name)) for t in task_list}
    figures.update({'time_to_solution.png': time_figure(results, task_list),
               'r_t.png': curve_figure(results, task_list, 'r_t'),
               'steps_to_accuracy.png': curve_figure(results, task_list,
                                                     'steps_curve')})
    for name, fig in figures.items():
      if fig is not None:
        tmp = os.path.join(workdir, f'.tmp-{name}')
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, os.path.join(workdir, name))


def resolve_jobs() -> tuple[dict, list, list, Settings]:
  """Validates the flags: (jobs, methods, seeds, settings); writes nothing."""
  for name in _NOT_USED:
    if FLAGS[name].present:
      raise runner.UsageError(f'--{name} does not apply to the benchmark')
  if not FLAGS.workdir:
    raise runner.UsageError('--workdir is required')
  seeds = parse_seeds(FLAGS.seeds)
  try:
    method_list = [methods.get(m) for m in FLAGS.methods]
  except ValueError as e:
    raise runner.UsageError(str(e))
  if not method_list or len(set(FLAGS.methods)) != len(FLAGS.methods):
    raise runner.UsageError(f'--methods must be distinct names, got '
                            f'{FLAGS.methods}')
  if not FLAGS.tasks or len(set(FLAGS.tasks)) != len(FLAGS.tasks):
    raise runner.UsageError(f'--tasks must be distinct names, got '
                            f'{FLAGS.tasks}')
  num_targets = FLAGS.num_targets
  num_solutions = FLAGS.num_solutions or NUM_SOLUTIONS
  if FLAGS.quick:
    if not FLAGS['num_targets'].present:
      num_targets = QUICK_SIZE
    if not FLAGS['num_solutions'].present:
      num_solutions = QUICK_SIZE
  if num_targets < 1:
    raise runner.UsageError(f'--num_targets must be >= 1, got {num_targets}')
  jobs = {}
  for name in FLAGS.tasks:
    try:  # the task's config, --quick / --epochs / --sampler
      jobs[name] = runner.resolve_config(name)
    except ImportError as e:
      raise runner.UsageError(f'task {name!r} is not available: {e}')
  rt_targets, rt_max = FLAGS.rt_targets, FLAGS.rt_max
  if FLAGS.quick:
    if not FLAGS['rt_targets'].present:
      rt_targets = min(QUICK_RT[0], num_targets)
    if not FLAGS['rt_max'].present:
      rt_max = QUICK_RT[1]
  if not 0 <= rt_targets <= num_targets:
    raise runner.UsageError(f'--rt_targets must lie in [0, --num_targets='
                            f'{num_targets}], got {rt_targets}')
  if rt_max < 1:
    raise runner.UsageError(f'--rt_max must be >= 1, got {rt_max}')
  try:
    steps_grid = tuple(int(v) for v in FLAGS.steps_grid)
  except ValueError:
    raise runner.UsageError(f'--steps_grid must be integers, got '
                            f'{FLAGS.steps_grid}')
  if any(v < 0 for v in steps_grid):
    raise runner.UsageError(f'--steps_grid must be >= 0, got {steps_grid}')
  if FLAGS.steps_solutions < 1:
    raise runner.UsageError(f'--steps_solutions must be >= 1, got '
                            f'{FLAGS.steps_solutions}')
  settings = Settings(FLAGS.workdir, num_targets, num_solutions, rt_targets,
                      rt_max, steps_grid, FLAGS.steps_solutions)
  for name, config in jobs.items():  # every run's settings, before any run
    for method in method_list:
      train.check(run_config(config, name, method.name, seeds[0], (),
                             settings), FLAGS.workdir)
  return jobs, method_list, seeds, settings


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {argv[1:]}')
  try:
    jobs, method_list, seeds, settings = resolve_jobs()
    logging.info('JAX devices: %s', jax.devices())
    run_benchmark(jobs, method_list, seeds, settings)
  except ValueError as e:  # UsageError and library input errors
    logging.error('%s', e)
    print(f'error: {e}', flush=True)
    raise SystemExit(2)


if __name__ == '__main__':
  app.run(main)
