"""Phase 1, training: one jit-compiled minibatch loop shared by every method.

One epoch is a single compiled call: a `lax.scan` over shuffled minibatches
of device-resident data, followed by the validation loss and the update of
the best-so-far parameters. Models plug in a loss function

  loss_fn(params, x, y, key, step) -> (loss, aux)   # aux: dict of scalars

and a validation function `val_fn(params, x, y) -> scalar`. The loop keeps
the final parameters and the ones with the lowest validation loss.

`fit_model` wraps the loop in what every method's `fit` shares: checks of
the pairs, the train / validation split, standardization, the optimizer,
and the `Model` record it returns.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ipage_jax import checkpoint as ckpt
from ipage_jax import data as data_lib
from ipage_jax import model as model_lib
from ipage_jax import parallel
from ipage_jax import schedules

Array = jax.Array
PyTree = Any
LossFn = Callable[[PyTree, Array, Array, Array, Array],
                  tuple[Array, dict[str, Array]]]
ValFn = Callable[[PyTree, Array, Array], Array]
Progress = Callable[[int, dict[str, float]], None]
# augment(key, x (b, D)) -> (b, D): a random symmetry of the designs.
Augment = Callable[[Array, Array], Array]


class TrainState(NamedTuple):
  """Everything that evolves during training (a pytree).

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: current parameters.
    opt_state: optimizer state.
    best_params: parameters with the lowest validation loss so far.
    best_val: that validation loss (inf before the first epoch).
  """
  step: Array
  params: PyTree
  opt_state: optax.OptState
  best_params: PyTree
  best_val: Array


class TrainResult(NamedTuple):
  """What `train` returns.

  Attributes:
    state: the final TrainState (`state.params` are the final parameters,
      `state.best_params` the best-validation ones).
    history: per-epoch metrics, name -> (epochs_run,) numpy array; always
      holds 'loss' and 'val_loss', plus the loss function's aux entries.
    diverged: True when training stopped on a non-finite loss; `state`
      then holds the last finite parameters.
  """
  state: TrainState
  history: dict[str, np.ndarray]
  diverged: bool


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Loop settings.

  Attributes:
    epochs: passes over the training rows.
    batch_size: rows per optimizer step; the last incomplete batch of each
      shuffled epoch is dropped.
    checkpoint_dir: where to save and resume (None: no checkpoints).
    checkpoint_every: save every this many epochs (and after the last).
    fingerprint: JSON-able description of the run (config, data shapes);
      a checkpoint with another fingerprint is refused on resume.
    mesh: a `jax.sharding.Mesh` (e.g. `parallel.make_mesh()`) for
      data-parallel training: every minibatch is split over its devices,
      data, parameters and optimizer state are replicated, XLA reduces the
      gradients. batch_size must be a multiple of its device count. None
      (default): one device.
    augment: `augment(key, xb) -> xb`, a random transformation of each
      training minibatch's x (batch_size, D) that leaves its y valid
      (data augmentation by a symmetry of the problem), with a fresh key
      per step; validation rows are not transformed. None: off.
    loop: 'scan' runs an epoch as one compiled `lax.scan` over its
      minibatches; 'host' calls one compiled step per minibatch from Python
      (the same steps and keys). XLA:CPU runs convolutions inside a compiled
      loop about 5x slower than outside one (measured on the architected
      ImageINN, docs/results.md), so convolutional networks train faster on
      a CPU with 'host'.
  """
  epochs: int
  batch_size: int
  checkpoint_dir: Optional[str] = None
  checkpoint_every: int = 50
  fingerprint: Any = None
  mesh: Optional[jax.sharding.Mesh] = None
  augment: Optional[Callable[[Array, Array], Array]] = None
  loop: str = 'scan'

  def __post_init__(self):
    if self.loop not in LOOPS:
      raise ValueError(f'unknown training loop {self.loop!r}; expected one '
                       f'of {LOOPS}')


LOOPS = ('scan', 'host')


def init_state(params: PyTree, optimizer: optax.GradientTransformation
               ) -> TrainState:
  """Initial TrainState for `params`."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), best_params=params,
                    best_val=jnp.array(jnp.inf, jnp.float32))


def make_epoch(loss_fn: LossFn, val_fn: ValFn,
               optimizer: optax.GradientTransformation, batch_size: int,
               num_batches: int,
               mesh: Optional[jax.sharding.Mesh] = None,
               augment: Optional[Callable[[Array, Array], Array]] = None,
               loop: str = 'scan') -> Callable:
  """Builds the `epoch(state, key, x, y, x_val, y_val)` function.

  With a `mesh`, each minibatch (batch_size, ...) is constrained to rows
  split over the mesh and the returned state to replicated; the inputs
  should be replicated on the mesh (`parallel.replicate`). With `augment`
  (see `TrainSettings`) every minibatch's x is transformed first. `loop`
  (see `TrainSettings`): 'scan' compiles the whole epoch into one call,
  'host' compiles one minibatch step and calls it `num_batches` times.

  Returns:
    epoch(state, key, x, y, x_val, y_val) -> (state, metrics): one shuffled
    pass of `num_batches` optimizer steps over (x, y), then the validation
    loss; `metrics` holds the epoch means of 'loss' and of every aux entry,
    and 'val_loss'.
  """
  if loop not in LOOPS:
    raise ValueError(f'unknown training loop {loop!r}; expected one of '
                     f'{LOOPS}')

  def train_step(state: TrainState, x: Array, y: Array, rows: Array,
                 step_key: Array):
    xb, yb = x[rows], y[rows]
    if augment is not None:
      step_key, key_augment = jax.random.split(step_key)
      xb = augment(key_augment, xb)
    if mesh is not None:
      xb, yb = (parallel.constrain_rows(a, mesh) for a in (xb, yb))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, xb, yb, step_key, state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(step=state.step + 1, params=params,
                          opt_state=opt_state), dict(aux, loss=loss)

  def batches(key, num_rows: int):
    """(num_batches, batch_size) shuffled rows and one key per step."""
    key_perm, key_steps = jax.random.split(key)
    perm = jax.random.permutation(key_perm, num_rows)
    idx = perm[:num_batches * batch_size].reshape(num_batches, batch_size)
    return idx, jax.random.split(key_steps, num_batches)

  def finish(state, metrics, x_val, y_val):
    """Epoch means of the stacked step metrics; validation; best params."""
    metrics = jax.tree_util.tree_map(jnp.mean, metrics)
    val = val_fn(state.params, x_val, y_val)
    better = val < state.best_val  # False for NaN, so NaN never wins
    best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old),
                                  state.params, state.best_params)
    state = state._replace(best_params=best,
                           best_val=jnp.where(better, val, state.best_val))
    if mesh is not None:
      state = parallel.constrain_replicated(state, mesh)
    return state, dict(metrics, val_loss=val)

  @jax.jit
  def scan_epoch(state, key, x, y, x_val, y_val):
    idx, keys = batches(key, x.shape[0])
    state, metrics = jax.lax.scan(
        lambda st, batch: train_step(st, x, y, *batch), state, (idx, keys))
    return finish(state, metrics, x_val, y_val)

  if loop == 'scan':
    return scan_epoch

  jit_batches = jax.jit(batches, static_argnums=1)
  # One dispatch per step: the step's rows and key are read on the device.
  jit_step = jax.jit(lambda state, x, y, idx, keys, i: train_step(
      state, x, y, idx[i], keys[i]))
  jit_finish = jax.jit(finish)

  def host_epoch(state, key, x, y, x_val, y_val):
    idx, keys = jit_batches(key, x.shape[0])
    steps = []
    for i in range(num_batches):
      state, step_metrics = jit_step(state, x, y, idx, keys, i)
      steps.append(step_metrics)
    metrics = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *steps)
    return jit_finish(state, metrics, x_val, y_val)

  return host_epoch


def train(key: Array, loss_fn: LossFn, val_fn: ValFn, params: PyTree,
          optimizer: optax.GradientTransformation,
          data: tuple[Array, Array], val_data: tuple[Array, Array],
          settings: TrainSettings, *,
          progress: Optional[Progress] = None) -> TrainResult:
  """Trains `params` on (x, y) minibatches; resumable from checkpoints.

  Epoch e uses the key `fold_in(key, e)`, so a run resumed from a checkpoint
  finishes with exactly the parameters of an uninterrupted run.

  Args:
    key: PRNG key of the whole run.
    loss_fn: `(params, x (b, D), y (b, M), key, step) -> (loss, aux)`.
    val_fn: `(params, x_val, y_val) -> scalar`, lower is better.
    params: initial parameters.
    optimizer: an optax transformation (its schedules see the step count).
    data: training (x (n, D), y (n, M)).
    val_data: validation (x_val, y_val); may be the training data.
    settings: epochs, batch size, checkpointing, optional device mesh.
    progress: called as progress(epoch, metrics) after every epoch.

  Returns:
    TrainResult (with a mesh, its arrays are replicated on the mesh).
  """
  x, y = (jnp.asarray(a) for a in data)
  x_val, y_val = (jnp.asarray(a) for a in val_data)
  if settings.epochs < 1:
    raise ValueError(f'epochs must be >= 1, got {settings.epochs}')
  if settings.batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {settings.batch_size}')
  num_batches = x.shape[0] // settings.batch_size
  if num_batches == 0:
    raise ValueError(f'{x.shape[0]} training rows are too few for one batch '
                     f'of {settings.batch_size}')
  if x_val.shape[0] == 0:
    raise ValueError('the validation set is empty')
  mesh = settings.mesh
  if mesh is not None and settings.batch_size % mesh.size:
    raise ValueError(f'batch_size {settings.batch_size} does not split '
                     f'evenly over the {mesh.size} devices of the mesh')

  state = init_state(params, optimizer)
  history: dict[str, list[float]] = {}
  first_epoch = 0
  if settings.checkpoint_dir is not None:
    restored = ckpt.restore_training(settings.checkpoint_dir, state,
                                     settings.fingerprint)
    if restored is not None:
      state, first_epoch, history = restored
  if mesh is not None:
    state, x, y, x_val, y_val = parallel.replicate(
        (state, x, y, x_val, y_val), mesh)

  epoch_fn = make_epoch(loss_fn, val_fn, optimizer, settings.batch_size,
                        num_batches, mesh, settings.augment, settings.loop)
  diverged = False
  last_good = state
  for epoch in range(first_epoch, settings.epochs):
    state, metrics = epoch_fn(state, jax.random.fold_in(key, epoch), x, y,
                              x_val, y_val)
    metrics = {k: float(v) for k, v in metrics.items()}
    if not math.isfinite(metrics['loss']):
      diverged, state = True, last_good
      break
    last_good = state
    for name, value in metrics.items():
      history.setdefault(name, []).append(value)
    if progress is not None:
      progress(epoch, metrics)
    done = epoch + 1
    if settings.checkpoint_dir is not None and (
        done % settings.checkpoint_every == 0 or done == settings.epochs):
      ckpt.save_training(settings.checkpoint_dir, parallel.to_host(state),
                         done, history, settings.fingerprint)
  return TrainResult(state, {k: np.asarray(v) for k, v in history.items()},
                     diverged)


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


def fit_model(key: Array, x, y, config: ml_collections.ConfigDict, *,
              method: str, net: Any, train_cfg: ml_collections.ConfigDict,
              init_fn: Callable[[Array], PyTree],
              make_loss: Callable[[int], LossFn], val_fn: ValFn,
              fingerprint: Any, checkpoint_dir: Optional[str] = None,
              progress: Optional[Progress] = None,
              augment: Optional[Augment] = None) -> model_lib.Model:
  """The data handling and training loop that every method's `fit` shares.

  Checks the pairs, splits off `train_cfg.val_fraction` for validation,
  standardizes x and y on the training split and trains with
  `make_optimizer(train_cfg)` in the loop of `train`, data-parallel over the
  devices of `config.parallel` when it asks for several.

  Args:
    key: PRNG key (split into split / init / train keys).
    x: (n, D) designs, original units.
    y: (n, M) properties, original units.
    config: the settings stored in the model (and its `parallel` section).
    method: name stored in the model.
    net: the network stored in the model.
    train_cfg: epochs, batch_size, learning rates, clipping, val_fraction,
      checkpoint_every (see `pipeline.default_config().train`).
    init_fn: key -> initial parameters.
    make_loss: total optimizer steps -> `loss_fn(params, x, y, key, step)`
      on standardized data.
    val_fn: `(params, x_val, y_val) -> scalar` validation loss.
    fingerprint: JSON-able description of what determines the parameters;
      a checkpoint with another fingerprint is refused.
    checkpoint_dir: save every `train_cfg.checkpoint_every` epochs there and
      resume from it.
    progress: `progress(epoch, metrics)` after every epoch.
    augment: `(key, x (b, D)) -> (b, D)` in original units, a random
      symmetry applied to every training minibatch (e.g. `Task.augment`);
      None: off.

  Returns:
    The Model (parameters on the default device, whatever the mesh). When
    training diverged a RuntimeWarning says so, `diverged` is True and the
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
  settings = TrainSettings(
      epochs=t.epochs, batch_size=t.batch_size,
      checkpoint_dir=checkpoint_dir, checkpoint_every=t.checkpoint_every,
      fingerprint=fingerprint,
      mesh=parallel.mesh_from_config(config.get('parallel')),
      augment=augment_std, loop=t.loop)
  result = train(
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
    state = jax.tree_util.tree_map(jnp.asarray, parallel.to_host(state))
  return model_lib.Model(
      method=method, net=net, params=state.params,
      best_params=state.best_params, x_scaler=x_scaler, y_scaler=y_scaler,
      x_range=(x[train_idx].min(0), x[train_idx].max(0)),
      y_range=(y[train_idx].min(0), y[train_idx].max(0)),
      config=config, history=result.history, diverged=result.diverged)
