"""One run: data -> fit (or reuse) -> solve -> evaluate -> outputs.

  result = train_and_evaluate(config, workdir)

as in the Flax examples: `config` says everything (the task config of
`experiments/configs/`, whose `run` section names the task, the method and
the targets and whose `evaluate` section the benchmark's protocols), the
outputs go to `workdir`. Both the per-task scripts (`experiments.runner`)
and the benchmark harness (`experiments.benchmark`, one call per task,
method and seed) run it.

Every setting is checked before anything is written (`check`). A model is
reused only when its fingerprint (the settings that determine training,
the data shape, the seed and the held-out rows) matches; its training
resumes from checkpoints of the same fingerprint. Outputs, all in
`workdir`: `config.json`, `model/` (orbax checkpoint) with `model.json` (its
fingerprint), `solutions.npz`, `metrics.json` and figures.

Keys: `config.seed` gives one root key, split into four; the first draws
the data. Without held-out targets the others fit, solve and feed the
task's report; with them (`evaluate.heldout_targets`) they split off the
held-out rows, fit and evaluate the protocols (the two layouts the scripts
and the benchmark always had, so that seeds reproduce earlier runs).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import evaluation
from ipage_jax import methods
from ipage_jax import metrics
from ipage_jax import plotting
from ipage_jax import solving
from ipage_jax import tasks

MODEL = 'model'   # the model's checkpoint directory in the workdir
# Sections that do not change what a run trains or measures: where it runs
# and what it is asked (they are left out of fingerprints and digests).
NOT_RESULT_SETTINGS = ('parallel', 'run', 'evaluate')


class UsageError(ValueError):
  """Bad input of a run (exit code 2, nothing written)."""


@dataclasses.dataclass(frozen=True)
class Run:
  """The resolved objects of one run."""
  task: tasks.Task
  method: methods.Method
  config: ml_collections.ConfigDict
  workdir: str


class Hooks(NamedTuple):
  """What a task script adds to a run.

  Attributes:
    prepare: `prepare(run) -> run` before the data are made (e.g. to give
      the task a data cache).
    check_targets: a task-specific check of the (M,) or (T, M) targets;
      raises ValueError (exit code 2, nothing written) or warns.
    report: `report(run=, model=, sols=, key=) -> dict` of extra metrics
      (figures go to `run.workdir`); runs without held-out targets only.
  """
  prepare: Optional[Callable[[Run], Run]] = None
  check_targets: Optional[Callable[[np.ndarray], object]] = None
  report: Optional[Callable[..., dict]] = None


# ---------------------------------------------------------------------------
# Checks (nothing is written before they pass).


def parse_targets(task: tasks.Task, target: str,
                  target_file: str) -> np.ndarray:
  """The run's targets: (M,) from 'a,b,...', (T, M) from a .npy file, or
  the task's default."""
  if target and target_file:
    raise UsageError('give --target or --target_file, not both')
  if target_file:
    try:
      values = np.load(target_file)
    except (OSError, ValueError) as e:
      raise UsageError(f'cannot read --target_file {target_file!r}: {e}')
    if values.ndim != 2 or values.shape[1] != task.y_dim or not len(values):
      raise UsageError(f'--target_file must hold an array of shape (T, '
                       f'{task.y_dim}), got {values.shape}')
  elif target:
    try:
      values = np.array([float(v) for v in target.split(',')])
    except ValueError:
      raise UsageError(f'--target {target!r} is not a comma-separated list '
                       'of numbers')
    if values.shape != (task.y_dim,):
      raise UsageError(f'--target has {values.size} value(s); task '
                       f'{task.name!r} needs {task.y_dim}')
  else:
    values = np.asarray(task.default_target)
  if not np.isfinite(values).all():
    raise UsageError('targets contain NaN or inf')
  return values.astype(np.float32)


def augmentation(task: tasks.Task, config: ml_collections.ConfigDict):
  """The task's `augment` when `config.train.augment` asks for it, else None.

  Raises:
    UsageError: augmentation asked for a task without symmetries.
  """
  if not config.train.get('augment', False):
    return None
  if task.augment is None:
    raise UsageError(f'config.train.augment is set, but task {task.name!r} '
                     'has no augment function')
  return task.augment


def check(config: ml_collections.ConfigDict, workdir: str,
          hooks: Hooks = Hooks()) -> tuple[Run, np.ndarray]:
  """Every check a run can make before it starts: (run, targets).

  Raises:
    UsageError: naming the first bad setting.
  """
  r, e = config.run, config.evaluate
  try:
    if not workdir:
      raise UsageError('--workdir is required')
    task, method = tasks.get(r.task), methods.get(r.method)
    if r.num_solutions < 1:
      raise UsageError(f'--num_solutions must be >= 1, got '
                       f'{r.num_solutions}')
    if config.train.epochs < 1:
      raise UsageError(f'--epochs (train.epochs) must be >= 1, got '
                       f'{config.train.epochs}')
    settings = method.solve_settings(config)
    if settings.forward == 'simulator' and (
        task.simulate is None or task.simulator_kind != 'exact'):
      raise UsageError(f"solve.forward='simulator' needs an exact "
                       f"simulator; task {task.name!r} has "
                       f"{task.simulator_kind if task.simulate else 'none'}")
    method.build(config, task.x_dim, task.y_dim)
    augmentation(task, config)
    if e.heldout_targets < 0 or not 0 <= e.rt_targets <= e.heldout_targets:
      raise UsageError(
          f'evaluate: need heldout_targets >= 0 and 0 <= rt_targets <= '
          f'heldout_targets, got {e.heldout_targets}, {e.rt_targets}')
    if e.rt_max < 1 or e.steps_solutions < 1 or e.coverage_solutions < 0:
      raise UsageError('evaluate: rt_max and steps_solutions must be >= 1 '
                       'and coverage_solutions >= 0')
    if any(int(v) < 0 for v in e.steps_grid):
      raise UsageError(f'evaluate.steps_grid must be >= 0, got '
                       f'{list(e.steps_grid)}')
    targets = parse_targets(task, r.target, r.target_file)
    if hooks.check_targets is not None:
      hooks.check_targets(targets)
  except UsageError:
    raise
  except ValueError as err:
    raise UsageError(str(err)) from err
  return Run(task, method, config, workdir), targets


# ---------------------------------------------------------------------------
# Files.


def override_solve(solve: ml_collections.ConfigDict, text: str
                   ) -> ml_collections.ConfigDict:
  """A copy of a `solve` section with the overrides of `text`.

  Args:
    solve: a config's `solve` section (not changed).
    text: space-separated `key=value` items, values as Python literals,
      e.g. "posterior_keep=1.0 rank_by='surrogate'"; '' changes nothing.

  Raises:
    UsageError: a malformed item, a value that is not a literal or a key
      that is not a solve setting.
  """
  out = solve.copy_and_resolve_references()
  for item in text.split():
    name, sep, value = item.partition('=')
    if not sep or not name:
      raise UsageError(f'solve overrides must be key=value, got {item!r}')
    if name not in out:
      raise UsageError(f'unknown solve setting {name!r}; expected one of '
                       f'{sorted(out.keys())}')
    try:
      out[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      raise UsageError(f'solve setting {name}: {value!r} is not a literal')
  return out


def write_json(path: str, value) -> None:
  checkpoint.write_atomic(path, json.dumps(
      value, indent=2, default=_json_default).encode())


def write_npz(path: str, **arrays) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  checkpoint.write_atomic(path, buffer.getvalue())


def read_json(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _json_default(value):
  if isinstance(value, (np.ndarray, jnp.ndarray)):
    return np.asarray(value).tolist()
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return str(value)


def as_json(value):
  """`value` as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def result_settings(config: ml_collections.ConfigDict) -> dict:
  """The settings that determine results (all but NOT_RESULT_SETTINGS)."""
  return {k: v for k, v in config.to_dict().items()
          if k not in NOT_RESULT_SETTINGS}


def training_view(fingerprint: Optional[dict]) -> Optional[dict]:
  """`fingerprint` without solve settings: its config's `solve` section and
  the `solve` of every method section (`config.<method>.solve`)."""
  if not fingerprint or 'config' not in fingerprint:
    return fingerprint
  config = {}
  for k, v in fingerprint['config'].items():
    if isinstance(v, dict) and 'solve' in v:
      v = {kk: vv for kk, vv in v.items() if kk != 'solve'}
      if not v:  # a section of solve settings only
        continue
    if k != 'solve':
      config[k] = v
  return dict(fingerprint, config=config)


def info_path(model_path: str) -> str:
  """The fingerprint file of a model (`model` -> `model.json`; a `.msgpack`
  model of an earlier version: the same name with `.json`)."""
  return os.path.splitext(model_path)[0] + '.json'


# ---------------------------------------------------------------------------
# Phase 1: fit, or reuse a model of the same fingerprint.


def progress_logger(label: str, epochs: int, log_every: int):
  """`progress(epoch, metrics)` that logs the losses, speed and an ETA.

  Logs the first two epochs, every `log_every` and the last one; the speed
  is measured after the first epoch of the call (which compiles).
  """
  start = time.perf_counter()
  first = []  # (time, epochs done) after the first epoch

  def progress(epoch, m):
    now, done = time.perf_counter(), epoch + 1
    if not first:
      first.append((now, done))
    t0, d0 = first[0]
    if done > d0 + 1 and done % log_every and done != epochs:
      return
    speed = 'includes compiling'
    if done > d0:
      rate = (done - d0) / max(now - t0, 1e-9)
      pace = (f'{rate:.1f} epochs/s' if rate >= 1
              else f'{1 / rate:.1f} s/epoch')
      speed = f'{pace}, ETA {duration((epochs - done) / rate)}'
    logging.info('%s: epoch %d/%d  %s  (%s, %s)', label, done, epochs,
                 '  '.join(f'{k}={v:.4g}' for k, v in sorted(m.items())),
                 duration(now - start), speed)

  return progress


def count_logger(label: str, unit: str, every_s: float = 30.0):
  """`progress(done, total)` of a long loop over items (e.g. FEM cells):
  logs at most every `every_s` seconds, with the rate after the first call
  (which usually includes compiling) and an ETA."""
  start = time.perf_counter()
  first, last = [], [-float('inf')]

  def progress(done, total):
    now = time.perf_counter()
    if not first:
      first.append((now, done))
      rate = done / max(now - start, 1e-9)
    else:
      rate = (done - first[0][1]) / max(now - first[0][0], 1e-9)
    if now - last[0] < every_s and done < total:
      return
    last[0] = now
    logging.info('%s: %d/%d %s, %.1f %s/s (%s, ETA %s)', label, done, total,
                 unit, rate, unit, duration(now - start),
                 duration((total - done) / max(rate, 1e-9)))

  return progress


def duration(seconds: float) -> str:
  """'42 s', '3.5 min' or '1.2 h'."""
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def fit_or_reuse(run: Run, key: jax.Array, x: np.ndarray, y: np.ndarray,
                 fingerprint: dict, *, label: str
                 ) -> tuple[Any, dict]:
  """The run's model: reused (`run.reuse_model`) or trained, then saved.

  With `run.reuse_model`, the first of `workdir/model` and
  `config.run.donors` (model paths of methods with the same `fit`, or
  `.msgpack` models of an earlier version) whose fingerprint file matches
  `fingerprint` (up to solve settings, which training does not read) is
  loaded; it then carries the current `config`. Otherwise the method fits
  (resuming from `model.ckpt-<digest>/` of an interrupted fit with the same
  fingerprint) and the model and its fingerprint are written.

  Returns:
    (model, {'fit_s': seconds or None, 'source': 'trained' | 'cache' |
    the donor's path}).
  """
  config = run.config
  fingerprint = training_view(as_json(fingerprint))
  path = os.path.join(run.workdir, MODEL)
  if config.run.reuse_model:
    for source in (path, *config.run.donors):
      info = read_json(info_path(source))
      if not (os.path.exists(source) and info is not None and
              training_view(info.get('fingerprint')) == fingerprint):
        continue
      model = methods.load_model(source, run.method.name)._replace(
          config=config)
      if source != path:
        methods.save_model(path, model)
        write_json(info_path(path), dict(info, source=source))
      logging.info('%s: reusing the model in %s', label, source)
      return model, {'fit_s': info.get('fit_s'),
                     'source': 'cache' if source == path else source}
    if os.path.exists(path):
      logging.warning('%s: the model in %s was trained with other settings '
                      'or data; training again', label, path)
  digest = hashlib.sha1(json.dumps(fingerprint).encode()).hexdigest()[:10]
  ckpt_dir = f'{path}.ckpt-{digest}'
  if not config.run.reuse_model:
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # start afresh
  logging.info('%s: training on %d rows, x %s, y %s', label, x.shape[0],
               x.shape[1:], y.shape[1:])
  start = time.perf_counter()
  model = run.method.fit(
      key, x, y, config, checkpoint_dir=ckpt_dir,
      progress=progress_logger(label, config.train.epochs,
                               config.log_every),
      augment=augmentation(run.task, config))
  fit_s = time.perf_counter() - start
  if model.diverged:
    logging.warning('%s: training diverged; last finite parameters kept',
                    label)
  methods.save_model(path, model)
  write_json(info_path(path), {'fingerprint': fingerprint, 'fit_s': fit_s,
                               'source': 'trained'})
  shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model replaces it
  return model, {'fit_s': fit_s, 'source': 'trained'}


# ---------------------------------------------------------------------------
# Phases 2 and 3, timed here (the library does not time itself).


class LocalizationLog:
  """`progress(done, steps)` of a localization: logs the steps done and an
  ETA once it has run for LOG_AFTER_S. Equal for equal labels, so that
  solves with the same settings reuse the compiled loop."""
  LOG_AFTER_S = 10.0

  def __init__(self, label: str):
    self.label = label
    self._start = time.perf_counter()

  def __eq__(self, other) -> bool:
    return isinstance(other, LocalizationLog) and other.label == self.label

  def __hash__(self) -> int:
    return hash((LocalizationLog, self.label))

  def __call__(self, done: int, steps: int) -> None:
    if done == 0:  # a new call of the compiled loop
      self._start = time.perf_counter()
      return
    elapsed = time.perf_counter() - self._start
    if elapsed >= self.LOG_AFTER_S and done < steps:
      logging.info('%s: localization step %d/%d (%s, ETA %s)', self.label,
                   done, steps, duration(elapsed),
                   duration(elapsed * (steps - done) / done))


def routed_solver(run: Run, model, settings: solving.SolveSettings
                  ) -> solving.Solver:
  """The run's method's solver as `settings` route it: the task's
  simulator, repair and design-space check (`solving.with_route`)."""
  return solving.with_route(run.method.solver(model), model, settings,
                            run.task.simulate, run.task.repair,
                            run.task.feasible)


def timed_solve(run: Run, model, key: jax.Array, y_target,
                num_solutions: int, *, label: str,
                solve_config: Optional[ml_collections.ConfigDict] = None
                ) -> tuple[solving.Solutions, metrics.TimeToSolution]:
  """The method's solve, phase by phase, with each phase's wall time.

  Returns:
    (solutions, TimeToSolution(inference_s: drawing the candidates,
    localization_s: localizing them, and the `solve.retries` rounds:
    drawing, localizing and ranking again), compilation included.
  """
  settings = run.method.solve_settings(model.config, solve_config)
  solver = routed_solver(run, model, settings)
  plan = solving.make_plan(model, solver, y_target, num_solutions, settings)
  rows = plan.targets.shape[0] * plan.num_draw
  start = time.perf_counter()
  x_draw = jax.block_until_ready(solving.draw_candidates(solver, key, plan))
  inference_s = time.perf_counter() - start
  if plan.localize:
    logging.info('%s: %d candidates drawn (%s, %.2f s); localizing them, %d '
                 'Adam steps', label, rows, settings.sampler, inference_s,
                 settings.localize_steps)
  start = time.perf_counter()
  moved = solving.localize_candidates(solver, plan, x_draw,
                                      LocalizationLog(label))
  moved = moved._replace(x=jax.block_until_ready(moved.x))
  localization_s = time.perf_counter() - start
  if plan.localize:
    logging.info('%s: localized in %s (%.3g row-steps/s)', label,
                 duration(localization_s),
                 rows * moved.steps / max(localization_s, 1e-9))
  sols = solving.select_solutions(model, solver, plan, x_draw, moved)
  if plan.localize and settings.retries:
    start = time.perf_counter()
    sols = solving.retry_failures(model, solver, key, plan, sols,
                                  LocalizationLog(label))
    retry_s = time.perf_counter() - start
    localization_s += retry_s
    logging.info('%s: up to %d retry round(s) in %s, %.4g gradient '
                 'evaluations per solution in all', label, settings.retries,
                 duration(retry_s), sols.gradient_steps_per_solution)
  return sols, metrics.TimeToSolution(inference_s, localization_s)


def _times(tts: metrics.TimeToSolution, suffix: str = '') -> dict:
  return {f'inference_s{suffix}': tts.inference_s,
          f'localization_s{suffix}': tts.localization_s}


def _evaluate(run: Run, sols: solving.Solutions) -> dict:
  if run.task.simulate is None:
    return {'surrogate_error': float(np.mean(sols.surrogate_error)),
            'gradient_steps_per_solution':
                float(sols.gradient_steps_per_solution)}
  return evaluation.evaluate_solutions(
      run.task, sols, posterior=run.method.draws_posterior)


def evaluate_targets(run: Run, model, key: jax.Array, targets: np.ndarray,
                     key_report: jax.Array,
                     hooks: Hooks) -> tuple[dict, solving.Solutions]:
  """The task scripts' evaluation: the run's targets, N solutions each."""
  n = run.config.run.num_solutions
  sols, tts = timed_solve(run, model, key, targets, n, label=run.task.name)
  record = dict(_evaluate(run, sols), **_times(tts))
  if sols.x.ndim == 2 and run.task.simulate is not None:
    record.update(evaluation.mode_coverage(
        run.task, sols, posterior=run.method.draws_posterior))
  if hooks.report is not None:
    record.update(hooks.report(run=run, model=model, sols=sols,
                               key=key_report))
  return record, sols


def protocol_b(run: Run, model, key: jax.Array, target: np.ndarray,
               num_solutions: int, label: str
               ) -> tuple[dict, solving.Solutions]:
  """Protocol B at one target: N solutions; the solve runs twice with the
  same key, the first (cold) call compiles, the second (warm) one gives the
  solutions and the time to solution."""
  _, cold = timed_solve(run, model, key, target, num_solutions, label=label)
  sols, warm = timed_solve(run, model, key, target, num_solutions,
                           label=label)
  record = dict(_evaluate(run, sols), target=target.tolist(),
                total_s=warm.total_s, **_times(warm), **_times(cold, '_cold'))
  return record, sols


def steps_curve(run: Run, model, key: jax.Array, num_solutions: int,
                grid: Sequence[int], label: str) -> Optional[dict]:
  """Protocol-B error against the localization budget (None: a method
  that does not localize).

  For every step count of `grid` the method solves the default target
  again (same key) with `solve.localize_steps` set to it (its learning-rate
  schedule spans those steps); `total_s` is that call's wall time,
  compilation included.
  """
  target = np.asarray(run.task.default_target, np.float32)
  out = {'steps': list(grid), 'gradient_steps_per_solution': [],
         'resimulation_error': [], 'total_s': []}
  for steps in grid:
    solve_cfg = ml_collections.ConfigDict(run.config.solve.to_dict())
    solve_cfg.localize_steps = int(steps)
    sols, tts = timed_solve(run, model, key, target, num_solutions,
                            label=label, solve_config=solve_cfg)
    if steps > 0 and sols.gradient_steps_per_solution == 0:
      return None
    err = evaluation.resimulation(run.task, np.asarray(sols.x), target)
    out['gradient_steps_per_solution'].append(
        sols.gradient_steps_per_solution)
    out['resimulation_error'].append(err['resimulation_error'])
    out['total_s'].append(tts.total_s)
  return out


class ProtocolKeys(NamedTuple):
  """The keys `evaluate_protocols` splits off its key."""
  a: jax.Array      # protocol A
  b: jax.Array      # protocol B (extra targets: fold_in(b, i + 1))
  rt: jax.Array     # r_T
  steps: jax.Array  # the steps curve


def protocol_keys(key: jax.Array) -> ProtocolKeys:
  """The protocols' keys from the evaluation key of a run (`run_data`)."""
  key_protocols, key_rt, key_steps = jax.random.split(key, 3)
  key_a, key_b = jax.random.split(key_protocols)
  return ProtocolKeys(key_a, key_b, key_rt, key_steps)


def evaluate_protocols(run: Run, model, key: jax.Array,
                       y_heldout: np.ndarray, label: str
                       ) -> tuple[dict, solving.Solutions]:
  """The benchmark's evaluation: protocols A and B, r_T, steps curve and
  mode coverage (see `default.get_config().evaluate`).

  Returns:
    (record, the protocol-B solutions of the default target).
  """
  e, task = run.config.evaluate, run.task
  keys = protocol_keys(key)
  start = time.perf_counter()
  sols_a, tts = timed_solve(run, model, keys.a, y_heldout, 1, label=label)
  a = dict(_evaluate(run, sols_a), num_targets=len(y_heldout),
           **_times(tts))
  target = np.asarray(task.default_target, np.float32)
  b, sols_b = protocol_b(run, model, keys.b, target,
                         run.config.run.num_solutions, label)
  record = {'protocol_a': a, 'protocol_b': b}
  if task.extra_targets:
    record['protocol_b_extra'] = [
        protocol_b(run, model, jax.random.fold_in(keys.b, i + 1),
                   np.asarray(t, np.float32), run.config.run.num_solutions,
                   label)[0] for i, t in enumerate(task.extra_targets)]
  logging.info('%s: protocols A (%d targets) and B (%d solutions) evaluated '
               '(%s)', label, len(y_heldout), run.config.run.num_solutions,
               duration(time.perf_counter() - start))
  if e.coverage_solutions and task.mode_index is not None:
    sols_c, _ = timed_solve(run, model, jax.random.fold_in(key, 1), target,
                            e.coverage_solutions, label=label)
    record['mode_coverage'] = evaluation.mode_coverage(
        task, sols_c, posterior=run.method.draws_posterior)
  if e.rt_targets:
    start = time.perf_counter()
    sols_rt, _ = timed_solve(run, model, keys.rt, y_heldout[:e.rt_targets],
                             e.rt_max, label=label)
    record['r_t'] = evaluation.r_t(task, sols_rt)
    logging.info('%s: r_T over %d targets (%s)', label, e.rt_targets,
                 duration(time.perf_counter() - start))
  if e.steps_grid:
    curve = steps_curve(run, model, keys.steps, e.steps_solutions,
                        [int(v) for v in e.steps_grid], label)
    if curve is not None:
      record['steps_curve'] = curve
  return record, sols_b


# ---------------------------------------------------------------------------
# The run.


def holdout_split(key: jax.Array, n: int, num_targets: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Random (train (n - T,), held-out (T,)) row indices."""
  if not 0 < num_targets < n:
    raise UsageError(f'cannot hold out {num_targets} of {n} rows')
  perm = np.asarray(jax.random.permutation(key, n))
  return np.sort(perm[num_targets:]), np.sort(perm[:num_targets])


class RunData(NamedTuple):
  """A run's data, its split and the keys of its phases (`run_data`)."""
  x: np.ndarray           # (n, D) every row, original units
  y: np.ndarray           # (n, M)
  train_rows: np.ndarray  # rows the method is fitted on
  held: np.ndarray        # (T,) held-out rows, the protocols' targets
  key_fit: jax.Array
  key_eval: jax.Array     # `evaluate_protocols`' key, or the solve's (T = 0)
  key_report: Optional[jax.Array]  # the task's report (T = 0), else None


def run_data(task: tasks.Task, config: ml_collections.ConfigDict
             ) -> RunData:
  """The data set of `config.seed` and `config.data_size`, the
  `config.evaluate.heldout_targets` rows held out of it, and the keys.

  `config.seed` gives one root key, split into four: the data; then with
  held-out rows the split, the fit and the evaluation, else the fit, the
  solve and the report.
  """
  key_data, key_1, key_2, key_3 = jax.random.split(
      jax.random.PRNGKey(config.seed), 4)
  x, y = task.make_dataset(key_data, config.data_size or None)
  x, y = data_lib.check_pairs(x, y)
  heldout = config.evaluate.heldout_targets
  if heldout:
    train_rows, held = holdout_split(key_1, x.shape[0], heldout)
    return RunData(x, y, train_rows, held, key_2, key_3, None)
  return RunData(x, y, np.arange(x.shape[0]), np.arange(0), key_1, key_2,
                 key_3)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Hooks = Hooks()) -> dict:
  """Runs data -> fit (or reuse) -> solve -> evaluate -> outputs.

  Args:
    config: a task config (`experiments/configs/<task>.py`) with its `run`
      (task, method, targets, num_solutions, reuse_model, donors) and
      `evaluate` sections filled in.
    workdir: the outputs (created).
    hooks: the task script's additions (data cache, target check, report).

  Returns:
    The metrics, as written to `workdir/metrics.json`: for a run without
    held-out targets a flat record of the run's targets (re-simulation
    error where the task has a simulator, posterior error, timings,
    settings, the report's numbers), else the protocols of
    `evaluate_protocols`.

  Raises:
    UsageError (a ValueError): bad settings, before anything is written.
  """
  run, targets = check(config, workdir, hooks)
  if hooks.prepare is not None:
    run = hooks.prepare(run)
  r, task = config.run, run.task
  label = f'{task.name}/{run.method.name}/seed{config.seed}'
  heldout = config.evaluate.heldout_targets
  if heldout and task.simulate is None:
    raise UsageError(f'task {task.name!r} has no simulator to evaluate '
                     'the protocols with')
  x, y, train_rows, held, key_fit, key_eval, key_report = run_data(task,
                                                                   config)
  fingerprint = {'config': result_settings(config), 'data': list(x.shape),
                 'data_seed': config.seed, 'heldout': len(held)}
  logging.info('%s: %d rows (%d held out), x %s, y %s', label, x.shape[0],
               len(held), x.shape[1:], y.shape[1:])
  model, fit = fit_or_reuse(run, key_fit, x[train_rows], y[train_rows],
                            fingerprint, label=label)
  result = {'task': task.name, 'method': run.method.name,
            'seed': config.seed, 'sampler': config.solve.sampler,
            'num_params': int(model.num_params), **fit}
  if heldout:
    record, sols = evaluate_protocols(run, model, key_eval, y[held], label)
    result.update(train_rows=len(train_rows), **record)
  else:
    record, sols = evaluate_targets(run, model, key_eval, targets,
                                    key_report, hooks)
    result.update(num_solutions=r.num_solutions, targets=targets,
                  data_rows=int(x.shape[0]),
                  simulator=task.simulator_kind if task.simulate else None)
    result.update(record)
    if model.history:
      plotting.training_curves(model.history).savefig(
          os.path.join(workdir, 'training_curves.png'), dpi=110)
  write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  write_npz(os.path.join(workdir, 'solutions.npz'), x=sols.x,
            x_posterior=sols.x_posterior, y_surrogate=sols.y_surrogate,
            y_target=sols.y_target)
  write_json(os.path.join(workdir, 'metrics.json'), result)
  return result
