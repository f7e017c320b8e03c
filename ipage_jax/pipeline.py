"""iPage end to end: `fit` (phase 1) and `solve` (phases 2 and 3).

  model = fit(key, x, y, config)                  # data in original units
  sols = solve(model, key, y_target, num_solutions=1000)
  sols.x                                          # (N, D) original units

iPage's own parts live here: the settings, the INN x -> [y, z] and its
bi-directional objective, posterior sampling f^-1([y*, z]) and the
surrogate f_y. The phases they plug into are shared with the baselines:
`training.fit_model`, `solving.solve` (draw, `localization`, `ranking`).
Standardization of x and y is fitted on the training split and lives in the
model; every array that goes in or comes out is in the data's own units.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipage_jax import data as data_lib
from ipage_jax import flows
from ipage_jax import image_flows
from ipage_jax import losses
from ipage_jax import model as model_lib
from ipage_jax import sampling
from ipage_jax import schedules
from ipage_jax import solving
from ipage_jax import training

Array = jax.Array
NAME = 'ipage'


def default_config() -> ml_collections.ConfigDict:
  """Default iPage settings (the paper's Table 5, sinewave column)."""
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
  c.train.x_noise = 0.0              # std, standardized x (dequantization)
  c.train.pad_noise = 0.01           # std in zero-padding columns
  c.train.ml_sigma = 0.1             # eq. 12 sigma (objective='ml')
  c.train.checkpoint_every = 50      # epochs
  # 'scan': an epoch is one compiled loop; 'host': one compiled step per
  # minibatch (conv nets: XLA:CPU convolutions are slow inside loops).
  c.train.loop = 'scan'

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
  # How solve picks the N kept of the oversampled candidates, one of
  # ipage_jax.ranking.NAMES: 'surrogate' (lowest surrogate error),
  # 'typicality' (the accepted ones, on the level set within accept_error in
  # standardized y units and inside the box, with the smallest latent norm)
  # or 'diversity' (a spread-out subset of the accepted ones).
  c.solve.rank_by = 'surrogate'
  c.solve.accept_error = 1e-4
  # rank_by='diversity' with more than one solution per target: draw at
  # least this many candidates per target, a pool to spread the N over
  # (0: just oversample x N).
  c.solve.min_candidates = 0
  # What localization descends and ranking scores: 'surrogate' (the learned
  # f_y) or 'simulator' (the task's differentiable simulator; every Adam
  # step then simulates every candidate).
  c.solve.forward = 'surrogate'
  # Binary designs: snap every coordinate of the solutions (and of the
  # posterior samples) to the nearer face of the box before ranking (the
  # architected cells: solid or void). `binarize_weight` ramps a penalty
  # 4 u (1 - u) on the box-scaled designs into localization, from 0 to this
  # weight at the last step, so the designs move towards binary values
  # while they are localized (0: threshold only).
  c.solve.binarize = False
  c.solve.binarize_weight = 0.0
  # Map every candidate (after binarize) to a design that can be made with
  # the task's `repair` before ranking (architected: solid islands outside
  # the largest periodic component turned void), and rank the ones outside
  # the task's design space (`feasible`: architected porosity outside the
  # data's 0.25-0.75) last; needs `repair=` (and `feasible=`) in solve.
  c.solve.repair = False
  # iPage: draw N / posterior_keep latent vectors per target and keep the
  # N posterior samples whose inverse padding is smallest (1: all; needs an
  # INN wider than x; see `sample_posterior`). Other methods ignore it.
  c.solve.posterior_keep = 1.0
  # Rounds of retries after the first pass (0: none). A kept solution that
  # misses the level set (surrogate error above accept_error, standardized
  # y units: e.g. every candidate of its target stalled at a local minimum
  # of the surrogate, seen without a simulator) or, with `repair`, lies
  # outside the task's design space is solved again from fresh candidates,
  # and the new solution replaces it if it is better (feasible first, then
  # a lower surrogate error; `solving.retry_failures`). A round draws and
  # localizes only the replacements of the failing solutions (oversampled
  # as the first pass); gradient_steps_per_solution counts them.
  c.solve.retries = 0

  # Several devices (BUILD.md): data-parallel training (the batch is split
  # over the devices, batch_size must be a multiple of their count) and
  # row-parallel localization. Changes where, not what, is computed (up to
  # float rounding).
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 1   # 1: one device; 0: all (every host); n: first n
  c.parallel.localize_chunk = 0  # most rows per localization call; 0: all
  return c


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """`saved` (a config dict) over `default_config()`: the fields added
  since an old model file was written get their defaults."""

  def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
      out[k] = (merge(base[k], v) if isinstance(v, dict)
                and isinstance(base.get(k), dict) else v)
    return out

  return ml_collections.ConfigDict(merge(default_config().to_dict(), saved))


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


def params_template(config: ml_collections.ConfigDict, x_dim: int,
                    y_dim: int) -> Any:
  """The shapes of the INN's parameters (`jax.ShapeDtypeStruct` leaves)."""
  inn = build_inn(config, x_dim, y_dim)
  return jax.eval_shape(inn.init, jax.random.PRNGKey(0),
                        jnp.zeros((1, inn.width), jnp.float32))


def fit(key: Array, x, y, config: Optional[ml_collections.ConfigDict] = None,
        *, checkpoint_dir: Optional[str] = None,
        progress: Optional[training.Progress] = None,
        augment: Optional[training.Augment] = None) -> model_lib.Model:
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
    The fitted Model: `params` sample f^-1([y*, z]), `best_params` (lowest
    validation L_y) are the surrogate f_y. When training diverged,
    `model.diverged` is True and the parameters are the last finite ones
    (a RuntimeWarning says so).
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
        backward_y_width=t.get('backward_y_width', 0.0),
        x_noise=t.get('x_noise', 0.0))

  model = training.fit_model(
      key, x, y, config, method=NAME, net=inn, train_cfg=t,
      init_fn=lambda k: inn.init(k, jnp.zeros((1, inn.width), jnp.float32)),
      make_loss=make_loss, val_fn=losses.make_forward_fit(inn),
      # What determines the trained parameters: model, training, data shapes
      # (solve settings or logging may change between resumed runs).
      fingerprint={'model': config.model.to_dict(), 'train': t.to_dict(),
                   'x': x.shape, 'y': y.shape},
      checkpoint_dir=checkpoint_dir, progress=progress, augment=augment)
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


def latent_moments(model: model_lib.Model, x) -> tuple[np.ndarray, np.ndarray]:
  """Column means and standard deviations of f_z(x), each (K,).

  Args:
    model: a fitted iPage Model (its final parameters, used for sampling).
    x: (n, D) designs in original units, e.g. the training data.
  """
  z = _latent(model.net, model.params,
              model.x_scaler.forward(jnp.asarray(x, jnp.float32)))
  z = np.asarray(z, np.float64)
  return z.mean(0), z.std(0)


@functools.partial(jax.jit, static_argnums=0)
def _latent(inn: flows.INN, params: Any, x_std: Array) -> Array:
  """(n, D) standardized designs -> (n, K) latent f_z(x)."""
  out, _ = inn.apply(params, inn.pad_x(x_std))
  return inn.split_output(out)[1]


def sample_posterior(inn: flows.INN, params, key: Array, y_target: Array,
                     num_solutions: int, sampler: str = 'maximin_lhs',
                     keep: float = 1.0) -> Array:
  """Phase 2: x = f^-1([y*, z, 0]) for space-filling z; standardized units.

  With `keep` < 1 (an INN wider than x), ceil(N / keep) latent vectors are
  drawn per target (one space-filling design) and the N whose inverse
  padding columns (dropped from the designs) are smallest are kept: the
  padding inputs of the training data were ~0, so a large one marks a draw
  that the network maps off its data, where f_y has never been fitted
  (docs/results.md, "The INN posterior").

  Args:
    inn: the network.
    params: its (final) parameters.
    key: PRNG key (one latent design per target, from its own subkey).
    y_target: (T, M) standardized targets.
    num_solutions: N samples per target.
    sampler: latent design, see `sampling.get_sampler`.
    keep: share of the latent draws kept, in (0, 1].

  Returns:
    (T, N, D) posterior samples in standardized units, in the order drawn.
  """
  num_targets = y_target.shape[0]
  num_draw = int(np.ceil(num_solutions / keep))
  z = sampling.sample_latent_per_target(key, num_targets, num_draw,
                                        inn.z_dim, sampler)  # (T, n, K)
  y_rep = jnp.broadcast_to(y_target[:, None, :],
                           (num_targets, num_draw, inn.y_dim))
  v = inn.join_yz(y_rep.reshape(-1, inn.y_dim), z.reshape(-1, inn.z_dim))
  x, pad = inn.split_input(inn.apply(params, v, method='inverse')[0])
  x = x.reshape(num_targets, num_draw, inn.x_dim)
  if num_draw == num_solutions:
    return x
  pad_norm = jnp.sum(jnp.square(pad), -1).reshape(num_targets, num_draw)
  rows = jnp.sort(jnp.argsort(pad_norm, axis=1)[:, :num_solutions], axis=1)
  return jnp.take_along_axis(x, rows[..., None], axis=1)


def check_posterior_keep(inn, keep: float) -> None:
  """`solve.posterior_keep` < 1 needs padding columns to rank the draws."""
  if keep < 1 and inn.width == inn.x_dim:
    raise ValueError(
        f'solve.posterior_keep={keep} ranks draws by their inverse padding, '
        f'but this INN has none (width {inn.width} = x_dim); use 1.0')


_sample_jit = jax.jit(sample_posterior, static_argnums=(0, 4, 5, 6))


def forward_y(inn: flows.INN, params, x_std: Array) -> Array:
  """The surrogate f_y on standardized data: (n, D) -> (n, M)."""
  return inn.split_output(inn.apply(params, inn.pad_x(x_std))[0])[0]


def surrogate(model: model_lib.Model, x: Array) -> Array:
  """f_y of an iPage model in original units: (n, D) -> (n, M)."""
  x_std = model.x_scaler.forward(jnp.asarray(x, jnp.float32))
  return model.y_scaler.inverse(forward_y(model.net, model.best_params,
                                          x_std))


def _draw(inn, params, key, y_std, n, settings: solving.SolveSettings):
  check_posterior_keep(inn, settings.posterior_keep)
  return _sample_jit(inn, params, key, y_std, n, settings.sampler,
                     float(settings.posterior_keep))


def solver(model: model_lib.Model, localize: bool = True) -> solving.Solver:
  """iPage's phases 2 and 3 for `model` (`localize=False`: the INN
  baseline, posterior samples as drawn)."""
  inn, params = model.net, model.params
  return solving.Solver(
      draw=lambda k, t, n, s: _draw(inn, params, k, t, n, s),
      forward=solving.Forward(forward_y, inn, model.best_params),
      typicality=lambda x_std: jnp.sum(
          jnp.square(_latent(inn, params, x_std)), -1),
      localize=localize)


def solve(model: model_lib.Model, key: Array, y_target,
          num_solutions: int = 1000, sampler: Optional[str] = None, *,
          localize: bool = True, steps: Optional[int] = None,
          learning_rate: Optional[float] = None,
          bounds: Optional[tuple[Any, Any]] = None,
          solve_config: Optional[ml_collections.ConfigDict] = None,
          simulate: Optional[Callable[[Array], Array]] = None,
          repair: Optional[Callable[[Array], Array]] = None,
          feasible: Optional[Callable[[Array], Array]] = None
          ) -> solving.Solutions:
  """Phases 2 and 3: many designs x with f_y(x) = y* for each target.

  Args:
    model: a fitted iPage Model.
    key: PRNG key of the latent designs.
    y_target: (M,) one target or (T, M) targets, original units; all
      targets are solved in one batched call.
    num_solutions: N designs per target.
    sampler: 'maximin_lhs' | 'lhs' | 'srs' (default: the config's).
    localize: run phase 3 (False: plain INN posterior samples).
    steps / learning_rate: localization steps and a constant step size
      (default: the config's steps and schedule).
    bounds: (lower (D,), upper (D,)) box of the boundary penalty and of
      `solve.clip_to_box`, original units (default: the training data's box).
    solve_config: settings replacing the model's `config.solve` (see
      `default_config`: sampler, localization, oversampling, clipping to the
      box and the ranking of the kept candidates).
    simulate: the task's differentiable simulator (n, D) -> (n, M),
      original units, for `solve.forward='simulator'`: localization then
      descends the simulator instead of the surrogate f_y.
    repair / feasible: the task's `repair` and `feasible`, for
      `solve.repair`.

  Returns:
    Solutions; leading shape (N,) for an (M,) target, (T, N) for (T, M).
  """
  settings = solving.solve_settings(
      model.config.solve if solve_config is None else solve_config,
      sampler=sampler, localize_steps=steps,
      localize_learning_rate=learning_rate,
      localize_final_learning_rate=learning_rate)
  return solving.solve(model, solver(model, localize), key, y_target,
                       num_solutions, settings, bounds, simulate, repair,
                       feasible)
