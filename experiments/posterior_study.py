r"""One iPage training, measured for its posterior (before localization).

  python -m experiments.posterior_study --task robot_arm \
      --config experiments/configs/robot_arm.py \
      --config.model.layout=padded --out runs/study/ra_pad.json

Trains on the task's data set (seed `--seed`, the key split of the task
scripts) with the given config and reports, in `--out` (JSON):
  post_QB / post_QA: re-simulation error of plain posterior samples
    f^-1([y*, z, 0]) (no localization): 1,000 for the default target, and
    one each for 1,000 targets from a data seed no training uses;
  post_modes_25 / post_modes_200 (sinewave): modes holding a posterior
    sample within |Omega(x) - y*| < 0.05;
  post_mean_true_y_at: the mean true y of 500 posterior samples at the
    10 / 50 / 90 % quantiles of the data's y (does the posterior follow y*?);
  final_QB / final_QA: the same after the config's localization;
  diag: where a poor posterior comes from (standardized units):
    data_pad_rms, the padding outputs of the training data;
    data_rec_rmse_pad0, x rebuilt from the data's own [y, z] with the
    padding set to 0 (0 when y and z alone determine x);
    post_xpad_rms, the padding columns of f^-1([y*, z, 0]), dropped from
    the designs; post_mse_std_*, the squared error to y* of f_y with and
    without them, of the surrogate and of the simulator;
  latent moments of the data and the best validation L_y.
With `--probit` the designs are mapped to the real line by
ndtri((x - lower) / (upper - lower)) before training (the box of the task)
and back by the normal CDF before simulating.
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jax.scipy.special import ndtri
from ml_collections import config_flags
import numpy as np

from ipage_jax import methods
from ipage_jax import metrics
from ipage_jax import pipeline
from ipage_jax import tasks
from ipage_jax.tasks import sinewave

_TASK = flags.DEFINE_string('task', 'sinewave', 'Task name.')
_OUT = flags.DEFINE_string('out', None, 'JSON report (the model is saved '
                           'next to it, .msgpack).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the data and the training.')
_LOCALIZE = flags.DEFINE_bool('localize', True, 'Also measure the final '
                              '(localized) errors.')
_PROBIT = flags.DEFINE_bool('probit', False, 'Train on the probit of the '
                            'box-scaled designs.')
config_flags.DEFINE_config_file('config', None, 'Task config file.')
FLAGS = flags.FLAGS


def diagnose(model, x, y, target, simulate, key) -> dict:
  """Padding diagnostics of a fitted model (module docstring)."""
  inn, p = model.net, model.params
  xs = model.x_scaler.forward(jnp.asarray(x[:2000]))
  ys = model.y_scaler.forward(jnp.asarray(y[:2000]))
  y_pred, z_pred, pad = inn.split_output(inn.apply(p, inn.pad_x(xs))[0])
  rms = lambda a: float(jnp.sqrt(jnp.mean(a**2))) if a.shape[1] else 0.0
  inverse_x = lambda yy, zz: inn.split_input(
      inn.apply(p, inn.join_yz(yy, zz), method='inverse')[0])
  out = {'data_pad_rms': rms(pad),
         'data_rec_rmse_pad0': rms(inverse_x(ys, z_pred)[0] - xs),
         'data_rec_rmse_ypred_pad0': rms(inverse_x(y_pred, z_pred)[0] - xs)}
  t_std = model.y_scaler.forward(jnp.asarray(target)[None])
  z = jax.random.normal(key, (1000, inn.z_dim))
  full = inn.apply(p, inn.join_yz(jnp.broadcast_to(t_std, (1000, inn.y_dim)),
                                  z), method='inverse')[0]
  xq, xpad = inn.split_input(full)
  out['post_xpad_rms'] = rms(xpad)
  f_y = lambda params, v: inn.split_output(inn.apply(params, v)[0])[0]
  y_true = model.y_scaler.forward(jnp.asarray(
      simulate(model.x_scaler.inverse(xq))))
  for name, v in (('fy_with_xpad', f_y(p, full)),
                  ('fy_xpad0', f_y(p, inn.pad_x(xq))),
                  ('surrogate', f_y(model.best_params, inn.pad_x(xq))),
                  ('true', y_true)):
    out['post_mse_std_' + name] = float(
        jnp.nanmean(jnp.sum((v - t_std)**2, -1)))
  return out


def q(simulate, x, target) -> float:
  """Mean ||Omega(x) - y*||^2 over the finite rows."""
  return float(np.nanmean(np.sum(
      (np.asarray(simulate(jnp.asarray(x))) - target)**2, -1)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  task = tasks.get(_TASK.value)
  config = FLAGS.config
  if config is None:
    raise app.UsageError('--config is required')
  if _PROBIT.value and config.solve.repair:
    raise app.UsageError('--probit does not combine with solve.repair: the '
                         "task's repair acts on designs in its own units")
  kd, kf, ks, kr = jax.random.split(jax.random.PRNGKey(_SEED.value), 4)
  x, y = task.make_dataset(kd, None)
  simulate, to_design = task.simulate, lambda v: v
  if _PROBIT.value:
    lo, hi = task.lower, task.upper
    x = np.asarray(ndtri(jnp.clip((x - lo) / (hi - lo), 1e-6, 1 - 1e-6)),
                   np.float32)
    to_design = lambda v: lo + (hi - lo) * ndtr(jnp.asarray(v))
    simulate = lambda v: task.simulate(to_design(v))
  start = time.time()

  def progress(epoch, m):
    if (epoch + 1) % 100 == 0 or epoch == 0:
      print(f'epoch {epoch + 1} ' + ' '.join(
          f'{k}={v:.3g}' for k, v in sorted(m.items())
          if not k.startswith('lam')), f'{time.time() - start:.0f}s',
            flush=True)

  model = pipeline.fit(kf, x, y, config, progress=progress)

  def solve(key, targets, num_solutions, **options):
    """pipeline.solve with the task's repair and design-space check."""
    return pipeline.solve(model, key, targets, num_solutions,
                          repair=task.repair, feasible=task.feasible,
                          **options)

  res = {'fit_s': time.time() - start}
  if _OUT.value:
    methods.save_model(_OUT.value.replace('.json', '.msgpack'), model)
  target = np.asarray(task.default_target)
  res['diag'] = diagnose(model, x, y, target, simulate, ks)
  post = solve(ks, target, 1000, localize=False).x
  res['post_QB'] = q(simulate, post, target)
  design = np.asarray(to_design(post))
  res['post_outside'] = float(np.mean(np.any(
      (design < task.lower) | (design > task.upper), -1)))
  follows = {}
  for value in np.quantile(y[:, 0], [0.1, 0.5, 0.9]):
    t = np.array(target, np.float32)
    t[0] = value
    samples = solve(ks, t, 500, localize=False).x
    follows[f'{value:.3g}'] = float(np.nanmean(
        np.asarray(simulate(jnp.asarray(samples)))[:, 0]))
  res['post_mean_true_y_at'] = follows
  _, y_a = task.make_dataset(jax.random.PRNGKey(10_000 + _SEED.value), 1000)
  post_a = solve(kr, y_a, 1, localize=False).x[:, 0]
  res['post_QA'] = q(simulate, post_a, y_a)
  if task.name == 'sinewave':
    for n in (25, 200):
      s = solve(jax.random.fold_in(ks, n), target, n, localize=False)
      xx = np.asarray(to_design(s.x))
      err = np.abs(np.asarray(sinewave.simulate(xx))[:, 0] - target[0])
      cov = metrics.mode_coverage(sinewave.mode_index(xx), err, 9, 0.05)
      res[f'post_modes_{n}'] = int(cov.num_covered)
  if _LOCALIZE.value:
    start = time.time()
    res['final_QB'] = q(simulate, solve(ks, target, 1000).x, target)
    res['solve_s'] = time.time() - start
    res['final_QA'] = q(simulate, solve(kr, y_a, 1).x[:, 0], y_a)
  mean, std = pipeline.latent_moments(model, x[:4096])
  res['latent_mean_absmax'] = float(np.abs(mean).max())
  res['latent_std'] = [float(std.min()), float(std.max())]
  res['best_val_ly'] = float(np.min(model.history['val_loss']))
  res['final_hist'] = {k: float(v[-1]) for k, v in model.history.items()}
  print(json.dumps(res, indent=1))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  app.run(main)
