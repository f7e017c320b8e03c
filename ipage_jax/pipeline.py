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
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import flows
from ipage_jax import image_flows
from ipage_jax import localization
from ipage_jax import losses
from ipage_jax import parallel as parallel_lib
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
  # Output layout of f(x): 'padded' is [y, z, pad] (Ardizzone et al. 2019;
  # the paper's eqs. 2-4) with z of `z_dim` columns and the padding outputs
  # trained to 0 (`train.lambda_pad`) and set to 0 when sampling; 'full'
  # gives z every column after y (width - y_dim).
  c.model.layout = 'full'
  c.model.z_dim = 0         # K for layout='padded'; 0 = x_dim - y_dim
  # 'dense': fully connected couplings on rows; 'image': the multi-scale
  # convolutional INN of `image_flows` on cells of `image.shape`.
  c.model.network = 'dense'
  c.model.image = ml_collections.ConfigDict()
  c.model.image.shape = (0, 0, 0)     # (h, w, c), h w c = x_dim
  c.model.image.levels = 2            # squeeze levels
  c.model.image.blocks_per_level = 4  # conv couplings per level
  c.model.image.hidden_channels = 32  # conv subnet channels
  c.model.image.kernel_size = 3
  c.model.image.dense_blocks = 4      # dense couplings after the last level
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
  c.train.lambda_pad = 1.0           # weight of ||pad outputs||^2 (constant)
  # Weight of the reconstruction of x from [y, f_z(x), fresh padding noise]
  # (constant; 0: off) and the std of the noise put on y and z there.
  c.train.lambda_rec = 0.0
  c.train.rec_noise = 0.0
  # > 0: L_x compares f^-1([y, z]) with x for similar y only (a Gaussian
  # weight of this width in standardized y units), i.e. the posteriors
  # p(x | y), not just the marginal p(x); 0: the paper's marginal L_x.
  c.train.backward_y_width = 0.0
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
  # Early stop: a candidate whose objective (squared surrogate error in
  # standardized y units, plus the boundary penalty) falls below this stops
  # moving (0: off, every candidate runs all steps).
  c.solve.localize_tol = 0.0
  c.solve.oversample = 1.0           # draw this x N samples, keep the N best
  # Project the drawn candidates, and again the localized ones, onto the box
  # (`bounds`, default the training box) before they are ranked. For designs
  # whose simulator clips them anyway (architected densities in [0, 1]), the
  # surrogate then ranks the designs that are really simulated.
  c.solve.clip_to_box = False
  # How solve picks the N kept of the oversampled candidates: 'surrogate'
  # (lowest surrogate error), 'typicality' or 'diversity'. The last two
  # choose among the accepted candidates, those on the level set (surrogate
  # error <= accept_error in standardized y units) and inside the box of
  # the boundary penalty, and rank the rest by surrogate error after them.
  # 'typicality' keeps the accepted with the smallest latent norm
  # ||f_z(x)||^2 under the final INN: designs typical of the training data,
  # where the surrogate is trustworthy (methods without an INN latent fall
  # back to 'surrogate'). 'diversity' keeps a greedy farthest-point subset
  # of the accepted in standardized x: the most spread-out designs.
  c.solve.rank_by = 'surrogate'
  c.solve.accept_error = 1e-4
  # rank_by='diversity' with more than one solution per target: draw at
  # least this many candidates per target, a pool to spread the N over
  # (0: just oversample x N).
  c.solve.min_candidates = 0

  # Several devices (BUILD.md): data-parallel training (the batch is split
  # over the devices, batch_size must be a multiple of their count) and
  # row-parallel localization. Changes where, not what, is computed (up to
  # float rounding).
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 1   # 1: one device; 0: all (every host); n: first n
  c.parallel.localize_chunk = 0  # most rows per localization call; 0: all
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

  @property
  def num_params(self) -> int:
    """Trainable scalars of the INN."""
    return flows.num_params(self.params)

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
    gradient_steps_per_solution: surrogate gradient evaluations (forward +
      backward) spent per returned solution, oversampling included.
  """
  x: np.ndarray
  x_posterior: np.ndarray
  y_surrogate: np.ndarray
  surrogate_error: np.ndarray
  y_target: np.ndarray
  inference_s: float
  localization_s: float
  gradient_steps_per_solution: float = 0.0


def _forward_y(inn: flows.INN, params, x_std: Array) -> Array:
  return inn.split_output(inn.apply(params, inn.pad_x(x_std))[0])[0]


LAYOUTS = ('padded', 'full')


def latent_dim(model_cfg: ml_collections.ConfigDict, x_dim: int,
               y_dim: int) -> int:
  """K, the latent width of `model_cfg` (see `default_config().model`)."""
  width = model_cfg.width or x_dim
  layout = model_cfg.get('layout', 'full')
  if layout not in LAYOUTS:
    raise ValueError(f'unknown model.layout {layout!r}; expected one of '
                     f'{LAYOUTS}')
  if layout == 'full':
    return width - y_dim
  z_dim = model_cfg.get('z_dim', 0) or x_dim - y_dim
  if z_dim < 1 or y_dim + z_dim > width:
    raise ValueError(
        f'model.z_dim={z_dim} must be >= 1 with y_dim + z_dim <= width '
        f'({y_dim} + {z_dim} > {width}); x_dim - y_dim = {x_dim - y_dim}')
  return z_dim


def build_inn(config: ml_collections.ConfigDict, x_dim: int,
              y_dim: int):
  """The INN of `config.model` for x_dim -> [y_dim, z_dim, padding].

  `model.network='dense'`: a `flows.INN` of fully connected couplings;
  'image': an `image_flows.ImageINN` over the cells of
  `model.image.shape` (h, w, c) with h w c = x_dim, the rest of
  `model.image` as its attributes (its dense part uses `model.hidden`,
  `model.depth`, `model.activation` and `model.clamp`).
  """
  m = config.model
  if m.get('network', 'dense') == 'image':
    return _image_inn(m, x_dim, y_dim)
  if m.get('network', 'dense') != 'dense':
    raise ValueError(f"unknown model.network {m.network!r}; expected "
                     "'dense' or 'image'")
  width = m.width or x_dim
  if width < x_dim or width <= y_dim:
    raise ValueError(f'model.width={width} must be >= x_dim={x_dim} and '
                     f'> y_dim={y_dim}')
  return flows.INN(x_dim=x_dim, y_dim=y_dim,
                   z_dim=latent_dim(m, x_dim, y_dim), min_width=width,
                   num_blocks=m.num_blocks, hidden=m.hidden, depth=m.depth,
                   activation=m.activation, coupling=m.coupling,
                   clamp=m.clamp, actnorm=m.actnorm)


def _image_inn(m: ml_collections.ConfigDict, x_dim: int, y_dim: int):
  img = m.image
  shape = tuple(int(v) for v in img.shape)
  if int(np.prod(shape)) != x_dim:
    raise ValueError(f'model.image.shape={shape} holds {np.prod(shape)} '
                     f'values, but x has {x_dim}')
  return image_flows.ImageINN(
      image_shape=shape, y_dim=y_dim, levels=img.levels,
      blocks_per_level=img.blocks_per_level,
      hidden_channels=img.hidden_channels, kernel_size=img.kernel_size,
      dense_blocks=img.dense_blocks, dense_hidden=m.hidden,
      dense_depth=m.depth, activation=m.activation, clamp=m.clamp)


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


class Fitted(NamedTuple):
  """What `fit_standardized` returns (every method's trained state).

  Attributes:
    params: final parameters.
    best_params: parameters with the lowest validation loss.
    x_scaler / y_scaler: standardization fitted on the training split.
    x_range / y_range: (lower, upper) boxes of the training rows.
    history: per-epoch metrics, name -> (epochs,).
    diverged: training stopped early on a non-finite loss.
  """
  params: Any
  best_params: Any
  x_scaler: data_lib.Standardizer
  y_scaler: data_lib.Standardizer
  x_range: tuple[np.ndarray, np.ndarray]
  y_range: tuple[np.ndarray, np.ndarray]
  history: dict
  diverged: bool


# augment(key, x (b, D)) -> (b, D): a random symmetry of the designs.
Augment = Callable[[Array, Array], Array]


def fit_standardized(key: Array, x, y, train_cfg: ml_collections.ConfigDict,
                     *, init_fn: Callable[[Array], Any],
                     make_loss: Callable[[int], training.LossFn],
                     val_fn: training.ValFn, fingerprint: Any,
                     checkpoint_dir: Optional[str] = None,
                     progress: Optional[training.Progress] = None,
                     parallel: Optional[ml_collections.ConfigDict] = None,
                     augment: Optional[Augment] = None) -> Fitted:
  """The data handling and training loop that every method shares.

  Checks the pairs, splits off `train_cfg.val_fraction` for validation,
  standardizes x and y on the training split and trains with
  `make_optimizer(train_cfg)` in the generic loop of `training.train`.

  Args:
    key: PRNG key (split into split / init / train keys).
    x: (n, D) designs, original units.
    y: (n, M) properties, original units.
    train_cfg: epochs, batch_size, learning rates, clipping, val_fraction,
      checkpoint_every (see `default_config().train`).
    init_fn: key -> initial parameters.
    make_loss: total optimizer steps -> `loss_fn(params, x, y, key, step)`
      on standardized data.
    val_fn: `(params, x_val, y_val) -> scalar` validation loss.
    fingerprint: JSON-able description of what determines the parameters;
      a checkpoint with another fingerprint is refused.
    checkpoint_dir: save every `train_cfg.checkpoint_every` epochs there and
      resume from it.
    progress: `progress(epoch, metrics)` after every epoch.
    parallel: a `default_config().parallel` section; with num_devices != 1
      the batches are split over that many devices (None: one device).
    augment: `(key, x (b, D)) -> (b, D)` in original units, a random
      symmetry applied to every training minibatch (e.g. `Task.augment`);
      None: off.

  Returns:
    Fitted (parameters on the default device, whatever the mesh). When
    training diverged a RuntimeWarning says so and the
    parameters are the last finite ones.
  """
  x, y = data_lib.check_pairs(x, y)
  t = train_cfg
  key_split, key_init, key_train = jax.random.split(key, 3)
  train_idx, val_idx = data_lib.train_val_split(key_split, x.shape[0],
                                                t.val_fraction)
  if t.val_fraction == 0:
    val_idx = train_idx
  x_scaler = data_lib.Standardizer.fit(x[train_idx])
  y_scaler = data_lib.Standardizer.fit(y[train_idx])
  xs, ys = x_scaler.forward(jnp.asarray(x)), y_scaler.forward(jnp.asarray(y))
  steps_per_epoch = len(train_idx) // t.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{len(train_idx)} training rows are too few for one '
                     f'batch of {t.batch_size}')
  total_steps = max(t.epochs * steps_per_epoch, 2)
  augment_std = None
  if augment is not None:  # in original units, between the scalings
    augment_std = lambda k, xb: x_scaler.forward(
        augment(k, x_scaler.inverse(xb)))
    fingerprint = {**fingerprint, 'augment': getattr(
        augment, '__qualname__', repr(augment))}
  settings = training.TrainSettings(
      epochs=t.epochs, batch_size=t.batch_size,
      checkpoint_dir=checkpoint_dir, checkpoint_every=t.checkpoint_every,
      fingerprint=fingerprint, mesh=parallel_lib.mesh_from_config(parallel),
      augment=augment_std)
  result = training.train(
      key_train, make_loss(total_steps), val_fn, init_fn(key_init),
      make_optimizer(t, total_steps), (xs[train_idx], ys[train_idx]),
      (xs[val_idx], ys[val_idx]), settings, progress=progress)
  if result.diverged:
    warnings.warn(
        'training diverged (non-finite loss) after '
        f'{len(result.history.get("loss", []))} epochs; keeping the last '
        'finite parameters and the best ones so far', RuntimeWarning)
  state = result.state
  if settings.mesh is not None:  # back from the mesh to the default device
    state = jax.tree_util.tree_map(jnp.asarray, parallel_lib.to_host(state))
  return Fitted(params=state.params, best_params=state.best_params,
                x_scaler=x_scaler, y_scaler=y_scaler,
                x_range=(x[train_idx].min(0), x[train_idx].max(0)),
                y_range=(y[train_idx].min(0), y[train_idx].max(0)),
                history=result.history, diverged=result.diverged)


def fit(key: Array, x, y, config: Optional[ml_collections.ConfigDict] = None,
        *, checkpoint_dir: Optional[str] = None,
        progress: Optional[training.Progress] = None,
        augment: Optional[Augment] = None) -> Model:
  """Trains an iPage model on paired data (phase 1).

  Args:
    key: PRNG key.
    x: (n, D) designs, original units.
    y: (n, M) properties, original units.
    config: settings (`default_config()` when None).
    checkpoint_dir: save every `config.train.checkpoint_every` epochs and
      resume from there (same config and data shapes required).
    progress: `progress(epoch, metrics)` after every epoch.
    augment: `(key, x (b, D)) -> (b, D)`, original units: a random symmetry
      of the designs that keeps y (e.g. `Task.augment`), applied to every
      training minibatch. None: off.

  Returns:
    The fitted Model. When training diverged, `model.diverged` is True and
    the parameters are the last finite ones (a RuntimeWarning says so).
  """
  config = default_config() if config is None else config
  x, y = data_lib.check_pairs(x, y)
  t = config.train
  inn = build_inn(config, x.shape[1], y.shape[1])

  def make_loss(total_steps):
    weights = schedules.bidirectional_weights(
        total_steps, peak=t.lambda_peak, xz_start=t.lambda_xz_start,
        y_end=t.lambda_y_end, switch_fraction=t.switch_fraction)
    return losses.make_inn_objective(
        inn, weights, objective=t.objective, widths=tuple(t.mmd_widths),
        y_noise=t.y_noise, pad_noise=t.pad_noise, ml_sigma=t.ml_sigma,
        pad_weight=t.get('lambda_pad', 1.0),
        rec_weight=t.get('lambda_rec', 0.0), rec_noise=t.get('rec_noise', 0.0),
        backward_y_width=t.get('backward_y_width', 0.0))

  fitted = fit_standardized(
      key, x, y, t,
      init_fn=lambda k: inn.init(k, jnp.zeros((1, inn.width), jnp.float32)),
      make_loss=make_loss, val_fn=losses.make_forward_fit(inn),
      # What determines the trained parameters: model, training, data shapes
      # (solve settings or logging may change between resumed runs).
      fingerprint={'model': config.model.to_dict(), 'train': t.to_dict(),
                   'x': x.shape, 'y': y.shape},
      checkpoint_dir=checkpoint_dir, progress=progress,
      parallel=config.get('parallel'), augment=augment)
  model = Model(inn=inn, params=fitted.params,
                surrogate_params=fitted.best_params,
                x_scaler=fitted.x_scaler, y_scaler=fitted.y_scaler,
                x_range=fitted.x_range, y_range=fitted.y_range,
                config=config, history=fitted.history,
                diverged=fitted.diverged)
  mean, std = latent_moments(model, x[:LATENT_CHECK_ROWS])
  if (np.abs(mean).max() > LATENT_MAX_MEAN
      or not LATENT_STD_RANGE[0] <= std.min() <= std.max()
      <= LATENT_STD_RANGE[1]):
    warnings.warn(
        'the latent f_z(x) of the training data is far from N(0, I) '
        f'(column means up to {np.abs(mean).max():.2g}, standard deviations '
        f'{std.min():.2g}-{std.max():.2g}): posterior samples f^-1([y*, z]) '
        'will be poor and can land far outside the data box. Try another '
        'key, or check the L_x / L_z curves in model.history.',
        RuntimeWarning, stacklevel=2)
  return model


# fit() warns when the latent of the training data strays this far from
# N(0, I) (a failed MMD training: seen as column means of 9 and standard
# deviations of 15 on one MoS2 seed, against < 0.5 and 0.9-2.5 on good ones).
LATENT_CHECK_ROWS = 4096
LATENT_MAX_MEAN = 1.0
LATENT_STD_RANGE = (0.2, 3.0)


def latent_moments(model: Model, x) -> tuple[np.ndarray, np.ndarray]:
  """Column means and standard deviations of f_z(x), each (K,).

  Args:
    model: a fitted Model (its final parameters, those used for sampling).
    x: (n, D) designs in original units, e.g. the training data.
  """
  z = _latent(model.inn, model.params,
              model.x_scaler.forward(jnp.asarray(x, jnp.float32)))
  z = np.asarray(z, np.float64)
  return z.mean(0), z.std(0)


@functools.partial(jax.jit, static_argnums=0)
def _latent(inn: flows.INN, params: Any, x_std: Array) -> Array:
  """(n, D) standardized designs -> (n, K) latent f_z(x)."""
  out, _ = inn.apply(params, inn.pad_x(x_std))
  return inn.split_output(out)[1]


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
  z = sampling.sample_latent_per_target(key, num_targets, num_solutions,
                                        inn.z_dim, sampler)  # (T, N, K)
  y_rep = jnp.broadcast_to(y_target[:, None, :],
                           (num_targets, num_solutions, inn.y_dim))
  v = inn.join_yz(y_rep.reshape(-1, inn.y_dim), z.reshape(-1, inn.z_dim))
  x = inn.split_input(inn.apply(params, v, method='inverse')[0])[0]
  return x.reshape(num_targets, num_solutions, inn.x_dim)


_sample_jit = jax.jit(sample_posterior, static_argnums=(0, 4, 5))


class Surrogate(NamedTuple):
  """A differentiable forward model on standardized data, for localization.

  Attributes:
    apply: module-level function `apply(net, params, x_std) -> y_std`
      ((n, D) -> (n, M)); with `net` it keys the cache of compiled loops.
    net: the (hashable) network, e.g. a Flax module.
    params: its parameters.
  """
  apply: Callable[[Any, Any, Array], Array]
  net: Any
  params: Any


# draw(key, y_std (T, M), n, sampler) -> (T, n, D) standardized designs.
Draw = Callable[[Array, Array, int, str], Array]


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
    bounds: (lower (D,), upper (D,)) box of the boundary penalty and of
      `solve.clip_to_box`, original units (default: the training data's box).
    solve_config: settings replacing the model's `config.solve` (sampler,
      localization steps, learning rates, boundary weight, oversampling,
      clipping to the box and how the kept candidates are ranked:
      `rank_by`, `accept_error`).

  Returns:
    Solutions; leading shape (N,) for an (M,) target, (T, N) for (T, M).
  """
  draw = lambda k, t, n, smp: _sample_jit(model.inn, model.params, k, t, n,
                                          smp)
  s = model.config.solve if solve_config is None else solve_config
  typicality = None
  if s.get('rank_by', 'surrogate') == 'typicality':
    typicality = lambda x_std: jnp.sum(
        jnp.square(_latent(model.inn, model.params, x_std)), -1)
  return solve_with(
      model, key, y_target, num_solutions, sampler, draw=draw,
      surrogate=Surrogate(_forward_y, model.inn, model.surrogate_params),
      localize=localize, steps=steps, learning_rate=learning_rate,
      bounds=bounds, solve_config=solve_config, typicality=typicality)


RANKINGS = ('surrogate', 'typicality', 'diversity')
# Candidates count as inside the box up to this fraction of its width.
BOX_MARGIN = 1e-3


@functools.partial(jax.jit, static_argnames='num_keep')
def diverse_subset(x: Array, score: Array, accepted: Array, num_keep: int
                   ) -> Array:
  """Greedy farthest-point choice of `num_keep` accepted candidates.

  Starts from the accepted candidate with the lowest score, then adds the
  accepted candidate farthest (Euclidean) from all chosen so far, ties
  broken by the lower score; once the accepted ones run out, the rest follow
  by score. The chosen set's minimum pairwise distance is at least half the
  best possible (Gonzalez 1985, "Clustering to minimize the maximum
  intercluster distance", Theor. Comput. Sci. 38).

  Args:
    x: (n, D) candidates.
    score: (n,) lower is better (e.g. surrogate error).
    accepted: (n,) bool, the candidates eligible for the spread-out choice.
    num_keep: how many to choose, <= n.

  Returns:
    (num_keep,) int32 distinct indices into the n candidates, in the order
    chosen.
  """
  def step(carry, _):
    taken, nearest = carry
    open_accepted = accepted & ~taken
    spread = jnp.where(open_accepted, nearest, -jnp.inf)
    farthest = open_accepted & (spread == jnp.max(spread))
    pick = jnp.where(
        jnp.any(open_accepted),
        jnp.argmin(jnp.where(farthest, score, jnp.inf)),
        jnp.argmin(jnp.where(taken, jnp.inf, score)))
    nearest = jnp.minimum(nearest, jnp.sum(jnp.square(x - x[pick][None]), -1))
    return (taken.at[pick].set(True), nearest), pick.astype(jnp.int32)

  n = x.shape[0]
  init = (jnp.zeros(n, bool), jnp.full(n, jnp.inf, x.dtype))
  _, picks = jax.lax.scan(step, init, None, length=num_keep)
  return picks


def solve_with(model, key: Array, y_target, num_solutions: int,
               sampler: Optional[str], *, draw: Draw,
               surrogate: Optional[Surrogate], localize: bool,
               steps: Optional[int] = None,
               learning_rate: Optional[float] = None,
               bounds: Optional[tuple[Any, Any]] = None,
               solve_config: Optional[ml_collections.ConfigDict] = None,
               typicality: Optional[Callable[[Array], Array]] = None
               ) -> Solutions:
  """The solve loop every method shares: draw, localize, keep the best.

  Args:
    model: anything with `config`, `x_scaler`, `y_scaler`, `x_range` and
      `y_range` (a fitted model of any method).
    key: PRNG key of the draws.
    y_target: (M,) or (T, M) targets, original units.
    num_solutions: N designs per target.
    sampler: latent / start design name (default: the config's).
    draw: `draw(key, y_std (T, M), n, sampler) -> (T, n, D)` standardized
      candidates (posterior samples or random starts).
    surrogate: forward model for localization and ranking; None for a
      method without one (then `y_surrogate` / `surrogate_error` are NaN).
    localize: run gradient-descent localization through `surrogate` and
      keep the best of the `solve.oversample` x N candidates; False returns
      N candidates as drawn.
    steps, learning_rate, bounds, solve_config: as in `solve`.
    typicality: `(n, D) standardized designs -> (n,)`, lower = more typical
      of the training data; used by `solve.rank_by='typicality'`: the kept
      candidates are those with surrogate error <= `solve.accept_error`
      (standardized y units) inside the box (`bounds`, up to `BOX_MARGIN`
      of its width) and the lowest typicality, then the others by
      surrogate error. With `rank_by='diversity'` the accepted ones are
      kept as a `diverse_subset`; with 'surrogate' by surrogate error alone.

  Returns:
    Solutions; leading shape (N,) for an (M,) target, (T, N) for (T, M).
  """
  s = model.config.solve if solve_config is None else solve_config
  sampler = sampler or s.sampler
  rank_by = s.get('rank_by', 'surrogate')
  if rank_by not in RANKINGS:
    raise ValueError(f'solve.rank_by must be one of {RANKINGS}, got '
                     f'{rank_by!r}')
  if rank_by == 'typicality' and typicality is None:
    rank_by = 'surrogate'  # no latent (baselines): as documented
  if not s.get('accept_error', 1e-4) >= 0:  # also refuses NaN
    raise ValueError(f"solve.accept_error must be >= 0, got "
                     f"{s.get('accept_error')!r}")
  if num_solutions < 1:
    raise ValueError(f'num_solutions must be >= 1, got {num_solutions}')
  y_dim = model.y_range[0].shape[0]
  targets = check_targets(y_target, y_dim, model.y_range)
  single = targets.ndim == 1
  targets = np.atleast_2d(targets)
  t_std = model.y_scaler.forward(jnp.asarray(targets))

  # Oversampling: draw `oversample` times more candidates, localize them all,
  # keep per target the N with the lowest surrogate error. This drops the rare
  # samples that localization leaves stuck at a critical point of the
  # surrogate (visible from the surrogate alone, no simulator needed).
  oversample = float(s.get('oversample', 1.0))
  if oversample < 1.0:
    raise ValueError(f'solve.oversample must be >= 1, got {oversample}')
  if surrogate is None and localize:
    raise ValueError('localization needs a surrogate forward model')
  if not localize:  # plain samples: nothing is dropped or ranked
    oversample = 1.0
  num_draw = int(np.ceil(num_solutions * oversample))
  min_candidates = s.get('min_candidates', 0)
  if isinstance(min_candidates, bool) or not isinstance(
      min_candidates, (int, np.integer)) or min_candidates < 0:
    raise ValueError(f'solve.min_candidates must be an integer >= 0, got '
                     f'{min_candidates!r}')
  if localize and rank_by == 'diversity' and num_solutions > 1:
    num_draw = max(num_draw, int(min_candidates))
  clip = s.get('clip_to_box', False)
  if not isinstance(clip, (bool, np.bool_)):
    raise ValueError(f'solve.clip_to_box must be True or False, got {clip!r}')
  # The box in standardized units: the boundary penalty, `inside`, clipping.
  lower, upper = bounds if bounds is not None else model.x_range
  lo, hi = (np.asarray(model.x_scaler.forward(
      jnp.asarray(b, jnp.float32)[None])[0]) for b in (lower, upper))

  def project(x):  # (..., D) standardized
    if not clip:
      return x
    return jnp.clip(x, jnp.broadcast_to(lo, x.shape),
                    jnp.broadcast_to(hi, x.shape))

  start = time.perf_counter()
  x_draw = jax.block_until_ready(
      project(draw(key, t_std, num_draw, sampler)))
  inference_s = time.perf_counter() - start

  num_targets, d = targets.shape[0], x_draw.shape[-1]
  flat_x = x_draw.reshape(-1, d)
  flat_t = jnp.repeat(t_std, num_draw, axis=0)
  start = time.perf_counter()
  num_steps = 0
  if localize:
    box = None
    if s.boundary_weight > 0:
      box = (tuple(lo.tolist()), tuple(hi.tolist()))
    if learning_rate is None:
      lr, final_lr = s.localize_learning_rate, s.localize_final_learning_rate
    else:
      lr = final_lr = learning_rate
    num_steps = s.localize_steps if steps is None else steps
    tol = float(s.get('localize_tol', 0.0))
    if not tol >= 0:  # also refuses NaN
      raise ValueError(f'solve.localize_tol must be >= 0, got {tol}')
    localizer = _localizer(surrogate.apply, surrogate.net, num_steps, lr,
                           final_lr, box, s.boundary_weight, tol or None)
    par = model.config.get('parallel')
    mesh = parallel_lib.mesh_from_config(par)
    chunk = 0 if par is None else int(par.get('localize_chunk', 0))
    if mesh is None and chunk == 0:
      result = localizer(surrogate.params, flat_x, flat_t)
    else:  # rows split over devices / hosts, in chunks
      result = parallel_lib.localize_sharded(
          localizer, surrogate.params, flat_x, flat_t, mesh, chunk)
    flat_x = jax.block_until_ready(project(result.x))
    if tol:  # stopped early: the updates actually run (for every row)
      num_steps = int(np.max(np.asarray(result.steps)))
  localization_s = time.perf_counter() - start

  repeat_targets = jnp.repeat(jnp.asarray(targets), num_draw, 0)
  if surrogate is None:
    y_sur = jnp.full(repeat_targets.shape, jnp.nan)
    err = jnp.full(repeat_targets.shape[:1], jnp.nan)
    keep = jnp.broadcast_to(jnp.arange(num_solutions),
                            (num_targets, num_solutions))
  else:
    y_sur = model.y_scaler.inverse(
        surrogate.apply(surrogate.net, surrogate.params, flat_x))
    err = jnp.sum(jnp.square(y_sur - repeat_targets), -1)
    # (T, num_draw) -> the num_solutions best per target (all if no extra).
    score = err.reshape(num_targets, num_draw)
    if rank_by == 'surrogate' or not localize:
      keep = jnp.argsort(score, axis=1)[:, :num_solutions]
    else:
      err_std = jnp.sum(jnp.square(model.y_scaler.forward(y_sur) - flat_t),
                        -1).reshape(num_targets, num_draw)
      # Accepted: on the level set and inside the box. Far outside it an
      # extrapolating surrogate can be met by a wrong design, which the
      # farthest-point choice would otherwise pick first.
      margin = BOX_MARGIN * (hi - lo)
      inside = jnp.all((flat_x >= (lo - margin)[None])
                       & (flat_x <= (hi + margin)[None]), -1)
      accepted = ((err_std <= s.get('accept_error', 1e-4))
                  & inside.reshape(num_targets, num_draw))
      if rank_by == 'typicality':
        secondary = jnp.where(accepted, typicality(flat_x).reshape(
            num_targets, num_draw), score)
        keep = jnp.lexsort((secondary, ~accepted), axis=1)[:, :num_solutions]
      else:
        keep = jax.vmap(functools.partial(
            diverse_subset, num_keep=num_solutions))(
                flat_x.reshape(num_targets, num_draw, d), score, accepted)
    keep = jnp.sort(keep, axis=1)
  rows = (keep + num_draw * jnp.arange(num_targets)[:, None]).reshape(-1)
  lead = (num_solutions,) if single else (num_targets, num_solutions)
  as_np = lambda a, tail: np.asarray(a[rows]).reshape(lead + tail)
  return Solutions(
      x=as_np(model.x_scaler.inverse(flat_x), (d,)),
      x_posterior=as_np(model.x_scaler.inverse(x_draw.reshape(-1, d)), (d,)),
      y_surrogate=as_np(y_sur, (y_dim,)),
      surrogate_error=as_np(err, ()),
      y_target=targets[0] if single else targets,
      inference_s=inference_s, localization_s=localization_s,
      gradient_steps_per_solution=num_steps * num_draw / num_solutions)


@functools.lru_cache(maxsize=16)
def _localizer(apply: Callable, net: Any, steps: int, learning_rate: float,
               final_learning_rate: float,
               box: Optional[tuple[tuple[float, ...], tuple[float, ...]]],
               boundary_weight: float, tol: Optional[float] = None):
  """A compiled localizer per setting, reused across `solve` calls.

  The Adam step size decays from `learning_rate` to `final_learning_rate`
  along a cosine: large steps first to reach the level set from far-away
  samples, small ones at the end so the iterates settle on it.
  """
  schedule = learning_rate
  if final_learning_rate != learning_rate:
    schedule = optax.cosine_decay_schedule(
        learning_rate, max(steps, 1), final_learning_rate / learning_rate)
  return localization.make_localizer(
      functools.partial(apply, net), steps=steps, learning_rate=schedule,
      bounds=box, boundary_weight=boundary_weight, tol=tol)


def save_fitted(path: str, model, params: dict, method: str) -> None:
  """Writes a fitted model of any method to one file (atomically).

  Args:
    path: the file.
    model: a model with `config`, `x_scaler`, `y_scaler`, `x_range`,
      `y_range`, `history` and `diverged`.
    params: name -> parameter pytree, everything else the model learned.
    method: the method's name, checked on load.
  """
  tree = {'params': params, 'x_scaler': model.x_scaler._asdict(),
          'y_scaler': model.y_scaler._asdict(),
          'x_range': list(model.x_range), 'y_range': list(model.y_range)}
  meta = {'method': method, 'config': model.config.to_dict(),
          'x_dim': int(model.x_range[0].shape[0]),
          'y_dim': int(model.y_range[0].shape[0]),
          'diverged': bool(model.diverged),
          'history': {k: np.asarray(v).tolist()
                      for k, v in model.history.items()}}
  checkpoint.save_pytree(path, tree, meta)


class Loaded(NamedTuple):
  """What `load_fitted` reads: the parameters and the shared fields."""
  params: dict
  config: ml_collections.ConfigDict
  x_dim: int
  y_dim: int
  common: dict  # x_scaler, y_scaler, x_range, y_range, history, diverged


def load_fitted(path: str, method: str,
                params_template: Callable[[ml_collections.ConfigDict, int,
                                           int], dict]) -> Loaded:
  """Reads a file written by `save_fitted`.

  Args:
    path: the file.
    method: the expected method name.
    params_template: (config, x_dim, y_dim) -> a pytree with the shapes of
      the saved `params` (e.g. from `jax.eval_shape` of the init).

  Raises:
    ValueError: for a missing, corrupted or inconsistent file, or a model of
      another method.
  """
  _, meta = checkpoint.read_pytree(path)
  try:
    config = ml_collections.ConfigDict(meta['config'])
    x_dim, y_dim = int(meta['x_dim']), int(meta['y_dim'])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path!r} is not a saved model: {e}') from e
  saved = meta.get('method', 'ipage')
  if saved != method:
    raise ValueError(f'{path!r} holds a {saved!r} model, not {method!r}')
  zeros = lambda k: np.zeros((k,), np.float32)
  template = {'params': params_template(config, x_dim, y_dim),
              'x_scaler': {'mean': zeros(x_dim), 'scale': zeros(x_dim)},
              'y_scaler': {'mean': zeros(y_dim), 'scale': zeros(y_dim)},
              'x_range': [zeros(x_dim), zeros(x_dim)],
              'y_range': [zeros(y_dim), zeros(y_dim)]}
  template = jax.tree_util.tree_map(
      lambda s: np.zeros(s.shape, s.dtype), template)
  tree, _ = checkpoint.load_pytree(path, template)
  as_jnp = lambda t: jax.tree_util.tree_map(jnp.asarray, t)
  common = dict(
      x_scaler=data_lib.Standardizer(**as_jnp(tree['x_scaler'])),
      y_scaler=data_lib.Standardizer(**as_jnp(tree['y_scaler'])),
      x_range=tuple(np.asarray(a) for a in tree['x_range']),
      y_range=tuple(np.asarray(a) for a in tree['y_range']),
      history={k: np.asarray(v) for k, v in meta['history'].items()},
      diverged=bool(meta.get('diverged', False)))
  return Loaded(as_jnp(tree['params']), config, x_dim, y_dim, common)


def save_model(path: str, model: Model) -> None:
  """Writes a fitted iPage Model to one file (atomically)."""
  save_fitted(path, model, {'final': model.params,
                            'surrogate': model.surrogate_params}, 'ipage')


def load_model(path: str) -> Model:
  """Reads a Model written by `save_model`.

  Raises:
    ValueError: for a missing, corrupted or inconsistent file.
  """

  def template(config, x_dim, y_dim):
    inn = build_inn(config, x_dim, y_dim)
    params = jax.eval_shape(inn.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, inn.width), jnp.float32))
    return {'final': params, 'surrogate': params}

  loaded = load_fitted(path, 'ipage', template)
  return Model(inn=build_inn(loaded.config, loaded.x_dim, loaded.y_dim),
               params=loaded.params['final'],
               surrogate_params=loaded.params['surrogate'],
               config=loaded.config, **loaded.common)
