"""iPage end to end: `fit` (phase 1) and `solve` (phases 2 and 3).

  model = fit(key, x, y, config)                  # data in original units
  sols = solve(model, key, y_target, num_solutions=1000)
  sols.x                                          # (N, D) original units

Standardization of x and y is fitted on the training split and lives in the
model; every array that goes in or comes out is in the data's own units.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import flows
from ipage_jax import localization
from ipage_jax import losses
from ipage_jax import sampling
from ipage_jax import schedules
from ipage_jax import training

Array = jax.Array


def default_config() -> ml_collections.ConfigDict:
  """Default iPage settings (SPEC section 7, sinewave column)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root seed of a run (scripts); `fit` itself takes a key

  c.model = ml_collections.ConfigDict()
  c.model.width = 0         # network width; 0 = x_dim (no extra padding)
  c.model.num_blocks = 4    # invertible coupling blocks
  c.model.hidden = 128      # subnet width
  c.model.depth = 3         # Dense layers per subnet
  c.model.activation = 'relu'
  c.model.coupling = 'glow'  # glow | realnvp | spline
  c.model.clamp = 2.0       # soft clamp of the affine log-scales
  c.model.actnorm = False

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 1000
  c.train.batch_size = 1024
  c.train.learning_rate = 1e-3       # initial
  c.train.final_learning_rate = 1e-5  # exponential decay to this
  c.train.weight_decay = 0.0         # AdamW decoupled weight decay
  c.train.grad_clip = 10.0           # global-norm clipping (0: off)
  c.train.val_fraction = 0.1         # held out for the best-f_y selection
  c.train.objective = 'mmd'          # mmd (bi-directional) | ml (eq. 12)
  c.train.lambda_peak = 1.0          # N_l
  c.train.lambda_xz_start = 0.0      # lam_x, lam_z in the first part
  c.train.lambda_y_end = 0.01        # lam_y at the end (-> 0)
  c.train.switch_fraction = 0.5      # first part: forward fit dominates
  c.train.mmd_widths = (0.2, 0.5, 0.9, 1.3)
  c.train.y_noise = 0.0              # std, standardized y units
  c.train.pad_noise = 0.01           # std in zero-padding columns
  c.train.ml_sigma = 0.1             # eq. 12 sigma (objective='ml')
  c.train.checkpoint_every = 50      # epochs

  c.solve = ml_collections.ConfigDict()
  c.solve.sampler = 'maximin_lhs'    # maximin_lhs | lhs | srs
  c.solve.localize_steps = 500
  c.solve.localize_learning_rate = 1e-3        # initial Adam step size
  c.solve.localize_final_learning_rate = 1e-3  # cosine decay to this
  c.solve.boundary_weight = 1.0      # NA boundary penalty (0: off)
  c.solve.oversample = 1.0           # draw this x N samples, keep the N best
  return c


class Model(NamedTuple):
  """A fitted iPage model.

  Attributes:
    inn: the network (a Flax module; parameters below).
    params: final parameters, used for sampling f^-1([y*, z]).
    surrogate_params: lowest-validation-L_y parameters, the surrogate f_y
      used by localization.
    x_scaler / y_scaler: standardization fitted on the training split.
    x_range: (lower (D,), upper (D,)) box of the training designs.
    y_range: (lower (M,), upper (M,)) range of the training properties.
    config: the resolved configuration.
    history: per-epoch training metrics (name -> (epochs,)).
    diverged: training stopped early on a non-finite loss.
  """
  inn: flows.INN
  params: Any
  surrogate_params: Any
  x_scaler: data_lib.Standardizer
  y_scaler: data_lib.Standardizer
  x_range: tuple[np.ndarray, np.ndarray]
  y_range: tuple[np.ndarray, np.ndarray]
  config: ml_collections.ConfigDict
  history: dict
  diverged: bool = False

  def surrogate(self, x: Array) -> Array:
    """f_y in original units: (n, D) designs -> (n, M) properties."""
    x_std = self.x_scaler.forward(x)
    return self.y_scaler.inverse(
        _forward_y(self.inn, self.surrogate_params, x_std))


class Solutions(NamedTuple):
  """Output of `solve`; leading shape (N,) for one target, (T, N) for many.

  Attributes:
    x: (..., N, D) localized designs, original units.
    x_posterior: (..., N, D) posterior samples before localization.
    y_surrogate: (..., N, M) surrogate prediction at `x`.
    surrogate_error: (..., N) ||f_y(x) - y*||^2, original units.
    y_target: (..., M) the targets.
    inference_s: seconds spent sampling the posterior (incl. compile).
    localization_s: seconds spent in localization (incl. compile).
  """
  x: np.ndarray
  x_posterior: np.ndarray
  y_surrogate: np.ndarray
  surrogate_error: np.ndarray
  y_target: np.ndarray
  inference_s: float
  localization_s: float


def _forward_y(inn: flows.INN, params, x_std: Array) -> Array:
  return inn.split_output(inn.apply(params, inn.pad_x(x_std))[0])[0]


def build_inn(config: ml_collections.ConfigDict, x_dim: int,
              y_dim: int) -> flows.INN:
  """The INN of `config.model` for x_dim -> y_dim (z takes the rest)."""
  m = config.model
  width = m.width or x_dim
  if width < x_dim or width <= y_dim:
    raise ValueError(f'model.width={width} must be >= x_dim={x_dim} and '
                     f'> y_dim={y_dim}')
  return flows.INN(x_dim=x_dim, y_dim=y_dim, z_dim=width - y_dim,
                   num_blocks=m.num_blocks, hidden=m.hidden, depth=m.depth,
                   activation=m.activation, coupling=m.coupling,
                   clamp=m.clamp, actnorm=m.actnorm)


def make_optimizer(train_cfg: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
  """Adam(W) with exponential learning-rate decay and gradient clipping."""
  lr = schedules.exponential_learning_rate(
      train_cfg.learning_rate, train_cfg.final_learning_rate, total_steps)
  parts = []
  if train_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
  parts.append(optax.adamw(lr, weight_decay=train_cfg.weight_decay))
  return optax.chain(*parts)


def fit(key: Array, x, y, config: Optional[ml_collections.ConfigDict] = None,
        *, checkpoint_dir: Optional[str] = None,
        progress: Optional[training.Progress] = None) -> Model:
  """Trains an iPage model on paired data (phase 1).

  Args:
    key: PRNG key (split into split / init / train keys).
    x: (n, D) designs, original units.
    y: (n, M) properties, original units.
    config: settings (`default_config()` when None).
    checkpoint_dir: save every `config.train.checkpoint_every` epochs and
      resume from there (same config and data shapes required).
    progress: `progress(epoch, metrics)` after every epoch.

  Returns:
    The fitted Model. When training diverged, `model.diverged` is True and
    the parameters are the last finite ones (a RuntimeWarning says so).
  """
  config = default_config() if config is None else config
  x, y = data_lib.check_pairs(x, y)
  t = config.train
  key_split, key_init, key_train = jax.random.split(key, 3)
  train_idx, val_idx = data_lib.train_val_split(key_split, x.shape[0],
                                                t.val_fraction)
  if t.val_fraction == 0:
    val_idx = train_idx
  x_scaler = data_lib.Standardizer.fit(x[train_idx])
  y_scaler = data_lib.Standardizer.fit(y[train_idx])
  xs, ys = x_scaler.forward(jnp.asarray(x)), y_scaler.forward(jnp.asarray(y))

  inn = build_inn(config, x.shape[1], y.shape[1])
  params = inn.init(key_init, jnp.zeros((1, inn.width), jnp.float32))
  steps_per_epoch = len(train_idx) // t.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{len(train_idx)} training rows are too few for one '
                     f'batch of {t.batch_size}')
  total_steps = max(t.epochs * steps_per_epoch, 2)
  weights = schedules.bidirectional_weights(
      total_steps, peak=t.lambda_peak, xz_start=t.lambda_xz_start,
      y_end=t.lambda_y_end, switch_fraction=t.switch_fraction)
  loss_fn = losses.make_inn_objective(
      inn, weights, objective=t.objective, widths=tuple(t.mmd_widths),
      y_noise=t.y_noise, pad_noise=t.pad_noise, ml_sigma=t.ml_sigma)
  settings = training.TrainSettings(
      epochs=t.epochs, batch_size=t.batch_size,
      checkpoint_dir=checkpoint_dir, checkpoint_every=t.checkpoint_every,
      # What determines the trained parameters: model, training, data shapes
      # (solve settings or logging may change between resumed runs).
      fingerprint={'model': config.model.to_dict(),
                   'train': config.train.to_dict(), 'x': x.shape,
                   'y': y.shape})
  result = training.train(
      key_train, loss_fn, losses.make_forward_fit(inn), params,
      make_optimizer(t, total_steps), (xs[train_idx], ys[train_idx]),
      (xs[val_idx], ys[val_idx]), settings, progress=progress)
  if result.diverged:
    warnings.warn(
        'training diverged (non-finite loss) after '
        f'{len(result.history.get("loss", []))} epochs; keeping the last '
        'finite parameters and the best surrogate so far', RuntimeWarning)
  return Model(inn=inn, params=result.state.params,
               surrogate_params=result.state.best_params,
               x_scaler=x_scaler, y_scaler=y_scaler,
               x_range=(x[train_idx].min(0), x[train_idx].max(0)),
               y_range=(y[train_idx].min(0), y[train_idx].max(0)),
               config=config, history=result.history,
               diverged=result.diverged)


def check_targets(y_target, y_dim: int,
                  y_range: Optional[tuple[np.ndarray, np.ndarray]] = None
                  ) -> np.ndarray:
  """Validates targets: (M,) or (T, M) finite; warns outside `y_range`."""
  y_target = np.asarray(y_target, np.float32)
  if y_target.ndim not in (1, 2) or y_target.shape[-1] != y_dim:
    raise ValueError(f'targets must have shape ({y_dim},) or (T, {y_dim}), '
                     f'got {y_target.shape}')
  if not np.isfinite(y_target).all():
    raise ValueError('targets contain NaN or inf')
  if y_range is not None:
    outside = ((y_target < y_range[0]) | (y_target > y_range[1])).any(-1)
    if outside.any():
      warnings.warn(
          f'{int(np.sum(outside))} target(s) lie outside the training data '
          f'range [{y_range[0]}, {y_range[1]}]; solutions there are '
          'extrapolations', UserWarning)
  return y_target


def sample_posterior(inn: flows.INN, params, key: Array, y_target: Array,
                     num_solutions: int, sampler: str = 'maximin_lhs'
                     ) -> Array:
  """Phase 2: x = f^-1([y*, z]) for space-filling z; standardized units.

  Args:
    inn: the network.
    params: its (final) parameters.
    key: PRNG key (one latent design per target, from its own subkey).
    y_target: (T, M) standardized targets.
    num_solutions: N samples per target.
    sampler: latent design, see `sampling.get_sampler`.

  Returns:
    (T, N, D) posterior samples in standardized units.
  """
  num_targets = y_target.shape[0]
  keys = jax.random.split(key, num_targets)
  z = jax.vmap(lambda k: sampling.sample_latent(
      k, num_solutions, inn.z_dim, sampler))(keys)           # (T, N, K)
  y_rep = jnp.broadcast_to(y_target[:, None, :],
                           (num_targets, num_solutions, inn.y_dim))
  v = inn.join_yz(y_rep.reshape(-1, inn.y_dim), z.reshape(-1, inn.z_dim))
  x = inn.split_input(inn.apply(params, v, method='inverse')[0])[0]
  return x.reshape(num_targets, num_solutions, inn.x_dim)


_sample_jit = jax.jit(sample_posterior, static_argnums=(0, 4, 5))


def solve(model: Model, key: Array, y_target, num_solutions: int = 1000,
          sampler: Optional[str] = None, *, localize: bool = True,
          steps: Optional[int] = None,
          learning_rate: Optional[float] = None,
          bounds: Optional[tuple[Any, Any]] = None,
          solve_config: Optional[ml_collections.ConfigDict] = None
          ) -> Solutions:
  """Phases 2 and 3: many designs x with f_y(x) = y* for each target.

  Args:
    model: a fitted Model.
    key: PRNG key of the latent designs.
    y_target: (M,) one target or (T, M) targets, original units; all
      targets are solved in one batched call.
    num_solutions: N designs per target.
    sampler: 'maximin_lhs' | 'lhs' | 'srs' (default: the config's).
    localize: run phase 3 (False: plain INN posterior samples).
    steps / learning_rate: localization settings (default: the config's).
    bounds: (lower (D,), upper (D,)) box of the boundary penalty, original
      units (default: the training data's box).
    solve_config: settings replacing the model's `config.solve` (sampler,
      localization steps, learning rates, boundary weight).

  Returns:
    Solutions; leading shape (N,) for an (M,) target, (T, N) for (T, M).
  """
  s = model.config.solve if solve_config is None else solve_config
  sampler = sampler or s.sampler
  if num_solutions < 1:
    raise ValueError(f'num_solutions must be >= 1, got {num_solutions}')
  targets = check_targets(y_target, model.inn.y_dim, model.y_range)
  single = targets.ndim == 1
  targets = np.atleast_2d(targets)
  t_std = model.y_scaler.forward(jnp.asarray(targets))

  # Oversampling: draw `oversample` times more posterior samples, localize
  # them all, keep per target the N with the lowest surrogate error. This
  # drops the rare samples that localization leaves stuck at a critical point
  # of f_y (visible from the surrogate alone, no simulator needed).
  oversample = float(s.get('oversample', 1.0))
  if oversample < 1.0:
    raise ValueError(f'solve.oversample must be >= 1, got {oversample}')
  num_draw = int(np.ceil(num_solutions * oversample))
  start = time.perf_counter()
  x_post = jax.block_until_ready(
      _sample_jit(model.inn, model.params, key, t_std, num_draw, sampler))
  inference_s = time.perf_counter() - start

  num_targets, d = targets.shape[0], model.inn.x_dim
  flat_x = x_post.reshape(-1, d)
  flat_t = jnp.repeat(t_std, num_draw, axis=0)
  start = time.perf_counter()
  if localize:
    lower, upper = bounds if bounds is not None else model.x_range
    box = None
    if s.boundary_weight > 0:
      box = tuple(tuple(np.asarray(model.x_scaler.forward(
          jnp.asarray(b, jnp.float32)[None])[0]).tolist())
                  for b in (lower, upper))
    if learning_rate is None:
      lr, final_lr = s.localize_learning_rate, s.localize_final_learning_rate
    else:
      lr = final_lr = learning_rate
    localizer = _localizer(model.inn,
                           s.localize_steps if steps is None else steps, lr,
                           final_lr, box, s.boundary_weight)
    result = localizer(model.surrogate_params, flat_x, flat_t)
    flat_x = jax.block_until_ready(result.x)
  localization_s = time.perf_counter() - start

  y_sur = model.surrogate(model.x_scaler.inverse(flat_x))
  err = jnp.sum(jnp.square(y_sur - jnp.repeat(jnp.asarray(targets),
                                              num_draw, 0)), -1)
  # (T, num_draw) -> the num_solutions best per target (all when no extra).
  keep = jnp.argsort(err.reshape(num_targets, num_draw), axis=1)
  keep = jnp.sort(keep[:, :num_solutions], axis=1)
  rows = (keep + num_draw * jnp.arange(num_targets)[:, None]).reshape(-1)
  lead = (num_solutions,) if single else (num_targets, num_solutions)
  as_np = lambda a, tail: np.asarray(a[rows]).reshape(lead + tail)
  return Solutions(
      x=as_np(model.x_scaler.inverse(flat_x), (d,)),
      x_posterior=as_np(model.x_scaler.inverse(x_post.reshape(-1, d)), (d,)),
      y_surrogate=as_np(y_sur, (model.inn.y_dim,)),
      surrogate_error=as_np(err, ()),
      y_target=targets[0] if single else targets,
      inference_s=inference_s, localization_s=localization_s)



@functools.lru_cache(maxsize=16)
def _localizer(inn: flows.INN, steps: int, learning_rate: float,
               final_learning_rate: float,
               box: Optional[tuple[tuple[float, ...], tuple[float, ...]]],
               boundary_weight: float):
  """A compiled localizer per setting, reused across `solve` calls.

  The Adam step size decays from `learning_rate` to `final_learning_rate`
  along a cosine: large steps first to reach the level set from far-away
  posterior samples, small ones at the end so the iterates settle on it.
  """
  schedule = learning_rate
  if final_learning_rate != learning_rate:
    schedule = optax.cosine_decay_schedule(
        learning_rate, max(steps, 1), final_learning_rate / learning_rate)
  return localization.make_localizer(
      functools.partial(_forward_y, inn), steps=steps,
      learning_rate=schedule, bounds=box, boundary_weight=boundary_weight)


def save_model(path: str, model: Model) -> None:
  """Writes a fitted Model to one file (atomically)."""
  tree = {'params': model.params, 'surrogate_params': model.surrogate_params,
          'x_scaler': model.x_scaler._asdict(),
          'y_scaler': model.y_scaler._asdict(),
          'x_range': list(model.x_range), 'y_range': list(model.y_range)}
  meta = {'config': model.config.to_dict(), 'x_dim': model.inn.x_dim,
          'y_dim': model.inn.y_dim, 'diverged': model.diverged,
          'history': {k: np.asarray(v).tolist()
                      for k, v in model.history.items()}}
  checkpoint.save_pytree(path, tree, meta)


def load_model(path: str) -> Model:
  """Reads a Model written by `save_model`.

  Raises:
    ValueError: for a missing, corrupted or inconsistent file.
  """
  _, meta = checkpoint.read_pytree(path)
  try:
    config = ml_collections.ConfigDict(meta['config'])
    x_dim, y_dim = int(meta['x_dim']), int(meta['y_dim'])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path!r} is not a saved iPage model: {e}') from e
  inn = build_inn(config, x_dim, y_dim)
  params = jax.eval_shape(inn.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, inn.width), jnp.float32))
  zeros = lambda k: np.zeros((k,), np.float32)
  template = {'params': params, 'surrogate_params': params,
              'x_scaler': {'mean': zeros(x_dim), 'scale': zeros(x_dim)},
              'y_scaler': {'mean': zeros(y_dim), 'scale': zeros(y_dim)},
              'x_range': [zeros(x_dim), zeros(x_dim)],
              'y_range': [zeros(y_dim), zeros(y_dim)]}
  template = jax.tree_util.tree_map(
      lambda s: np.zeros(s.shape, s.dtype), template)
  tree, _ = checkpoint.load_pytree(path, template)
  as_jnp = lambda t: jax.tree_util.tree_map(jnp.asarray, t)
  return Model(
      inn=inn, params=as_jnp(tree['params']),
      surrogate_params=as_jnp(tree['surrogate_params']),
      x_scaler=data_lib.Standardizer(**as_jnp(tree['x_scaler'])),
      y_scaler=data_lib.Standardizer(**as_jnp(tree['y_scaler'])),
      x_range=tuple(np.asarray(a) for a in tree['x_range']),
      y_range=tuple(np.asarray(a) for a in tree['y_range']),
      config=config, diverged=bool(meta.get('diverged', False)),
      history={k: np.asarray(v) for k, v in meta['history'].items()})
