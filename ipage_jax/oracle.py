"""A learned stand-in for a missing simulator: an ensemble of MLP regressors.

Data sets without a simulator (e.g. DFT band gaps) cannot be re-simulated at
new designs. Re-simulation then uses an *oracle*: a regression model trained
on all rows of the data, reported as such, with its own held-out error
(`kfold_error`) next to every re-simulation figure.

The oracle is a different model and training run from any surrogate the
evaluated methods use: those methods learn invertible networks (or mixture /
variational models), whereas the oracle is an ensemble of plain feed-forward
MLPs fitted by (censored) least squares from its own PRNG seed. Its errors
are therefore not shared with the surrogate used for localization.

Model: E members, each `flows.MLP` on standardized x and y; all members are
trained together in one jitted loop (`training.train`) with parameters
stacked along a leading ensemble axis and `jax.vmap` over it. Members differ
by their initialization. The prediction is the ensemble mean in original
units, optionally clipped below at `floor` (0 for band gaps: a gap is never
negative, and about two thirds of the MoS2 rows are exactly 0); with a floor
the members are by default trained and evaluated censored at it
(`OracleSettings.floor_in_loss`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ipage_jax import checkpoint
from ipage_jax import data as data_lib
from ipage_jax import flows
from ipage_jax import schedules
from ipage_jax import training

Array = jax.Array
PyTree = Any
Progress = Callable[[int, dict[str, float]], None]

# Rows of the training data used for the per-epoch validation figure (a
# monitor only: the final parameters are kept, see `fit_oracle`).
_MONITOR_ROWS = 2048


class OracleSettings(NamedTuple):
  """Hyperparameters of an oracle (hashable; stored with it).

  Attributes:
    members: E, ensemble size.
    hidden: width of the hidden layers.
    depth: Dense layers per member (depth - 1 hidden layers + output).
    activation: hidden activation (a name known to `flows.get_activation`).
    epochs: passes over the training rows.
    batch_size: rows per optimizer step.
    learning_rate: initial Adam(W) learning rate.
    final_learning_rate: learning rate at the end (exponential decay).
    weight_decay: AdamW decoupled weight decay.
    floor: predictions are clipped below at this value (original units);
      None: no clipping.
    floor_in_loss: with a floor, train each member on max(output, floor)
      (a censored least-squares fit): a member may output anything below
      the floor for a row at the floor, so the fit spends no capacity on
      the exact value of a point mass there; members are clipped before
      averaging. Ignored without a floor.
  """
  members: int = 5
  hidden: int = 128
  depth: int = 4
  activation: str = 'silu'
  epochs: int = 200
  batch_size: int = 256
  learning_rate: float = 1e-3
  final_learning_rate: float = 1e-5
  weight_decay: float = 0.0
  floor: Optional[float] = None
  floor_in_loss: bool = True


class Oracle(NamedTuple):
  """A fitted oracle.

  Attributes:
    params: parameters of the E members; every leaf has a leading axis E.
    x_scaler: standardization of the (D,) inputs (fitted on its rows).
    y_scaler: standardization of the (M,) outputs.
    settings: the OracleSettings it was trained with.
  """
  params: PyTree
  x_scaler: data_lib.Standardizer
  y_scaler: data_lib.Standardizer
  settings: OracleSettings

  @property
  def x_dim(self) -> int:
    return int(self.x_scaler.mean.shape[-1])

  @property
  def y_dim(self) -> int:
    return int(self.y_scaler.mean.shape[-1])


def make_settings(**overrides) -> OracleSettings:
  """OracleSettings with `overrides`, validated.

  Raises:
    ValueError: naming an unknown field or a bad value.
  """
  unknown = set(overrides) - set(OracleSettings._fields)
  if unknown:
    raise ValueError(f'unknown oracle settings {sorted(unknown)}; expected '
                     f'some of {OracleSettings._fields}')
  s = OracleSettings(**overrides)
  for name in ('members', 'hidden', 'depth', 'epochs', 'batch_size'):
    v = getattr(s, name)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'{name} must be a positive integer, got {v!r}')
  for name in ('learning_rate', 'final_learning_rate'):
    v = getattr(s, name)
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
      raise ValueError(f'{name} must be a finite number > 0, got {v!r}')
  if not (isinstance(s.weight_decay, (int, float))
          and math.isfinite(s.weight_decay) and s.weight_decay >= 0):
    raise ValueError(f'weight_decay must be >= 0, got {s.weight_decay!r}')
  if s.floor is not None and not (isinstance(s.floor, (int, float))
                                  and math.isfinite(s.floor)):
    raise ValueError(f'floor must be None or a finite number, got '
                     f'{s.floor!r}')
  if not isinstance(s.floor_in_loss, (bool, np.bool_)):
    raise ValueError(f'floor_in_loss must be a bool, got '
                     f'{s.floor_in_loss!r}')
  flows.get_activation(s.activation)  # raises for an unknown name
  # Plain Python scalars keep the settings hashable and JSON-able.
  return s._replace(
      members=int(s.members), hidden=int(s.hidden), depth=int(s.depth),
      epochs=int(s.epochs), batch_size=int(s.batch_size),
      learning_rate=float(s.learning_rate),
      final_learning_rate=float(s.final_learning_rate),
      weight_decay=float(s.weight_decay),
      floor=None if s.floor is None else float(s.floor),
      floor_in_loss=bool(s.floor_in_loss))


def _network(settings: OracleSettings, y_dim: int) -> flows.MLP:
  # A regression head: the last layer starts at the usual 1/sqrt(fan-in)
  # scale, not at zero as in a coupling subnet.
  return flows.MLP(hidden=settings.hidden, out_dim=y_dim,
                   depth=settings.depth, activation=settings.activation,
                   final_init_scale=1.0 / math.sqrt(settings.hidden))


def _members_apply(net: flows.MLP, params: PyTree, xs: Array) -> Array:
  """(n, D) standardized inputs -> (E, n, M) standardized member outputs."""
  return jax.vmap(lambda p: net.apply(p, xs))(params)


def fit_oracle(key: Array, x, y, *, progress: Optional[Progress] = None,
               **settings) -> Oracle:
  """Trains an oracle on all rows of (x, y).

  There is no held-out split: the oracle should use every row, and the lr
  decays to `final_learning_rate`, so the final parameters are kept. Its
  generalization error is measured separately with `kfold_error`.

  Args:
    key: PRNG key (member initializations and minibatch order).
    x: (n, D) inputs.
    y: (n, M) outputs.
    progress: called as progress(epoch, metrics) after every epoch, with
      'loss' (mean member MSE, standardized units) and 'val_loss' (MSE of
      the ensemble mean on up to 2048 training rows, standardized units).
    **settings: fields of `OracleSettings` (members, hidden, depth,
      activation, epochs, batch_size, learning_rate, final_learning_rate,
      weight_decay, floor, floor_in_loss).

  Returns:
    The fitted Oracle.

  Raises:
    ValueError: for bad data or settings, fewer rows than one batch, or a
      training run whose loss became non-finite (lower the learning rate).
  """
  s = make_settings(**settings)
  x, y = data_lib.check_pairs(x, y)
  n = x.shape[0]
  if n < s.batch_size:
    raise ValueError(f'{n} rows are too few for batch_size {s.batch_size}')
  x_scaler = data_lib.Standardizer.fit(x)
  y_scaler = data_lib.Standardizer.fit(y)
  xs, ys = x_scaler.forward(jnp.asarray(x)), y_scaler.forward(jnp.asarray(y))
  net = _network(s, y.shape[1])
  if s.floor is not None:
    floor_std = y_scaler.forward(jnp.full((1, y.shape[1]), s.floor))
  key_init, key_train = jax.random.split(key)
  params = jax.vmap(net.init, in_axes=(0, None))(
      jax.random.split(key_init, s.members), xs[:1])

  def loss_fn(params, xb, yb, key, step):
    del key, step
    pred = _members_apply(net, params, xb)
    if s.floor is not None and s.floor_in_loss:
      pred = jnp.maximum(pred, floor_std[None])
    member_mse = jnp.mean(jnp.square(pred - yb[None]), axis=(1, 2))
    # The mean over members gives each member the gradient of its own loss
    # (scaled by 1/E, which Adam removes): members train independently.
    return jnp.mean(member_mse), {}

  def val_fn(params, xv, yv):
    floor = None if s.floor is None else floor_std
    pred = _combine(s, _members_apply(net, params, xv), floor)
    return jnp.mean(jnp.square(pred - yv))

  total_steps = s.epochs * (n // s.batch_size)
  lr = schedules.exponential_learning_rate(
      s.learning_rate, s.final_learning_rate, total_steps)
  optimizer = optax.adamw(lr, weight_decay=s.weight_decay)
  monitor = (xs[:_MONITOR_ROWS], ys[:_MONITOR_ROWS])
  result = training.train(
      key_train, loss_fn, val_fn, params, optimizer, (xs, ys), monitor,
      training.TrainSettings(epochs=s.epochs, batch_size=s.batch_size),
      progress=progress)
  if result.diverged:
    raise ValueError(
        f'oracle training diverged after '
        f'{len(result.history.get("loss", ()))} '
        f'epochs with learning_rate={s.learning_rate}; lower it')
  return Oracle(result.state.params, x_scaler, y_scaler, s)


def predict(oracle: Oracle, x) -> Array:
  """Oracle prediction: clipped ensemble mean.

  Jit-able and differentiable in x (zero gradient where the floor binds).

  Args:
    oracle: a fitted Oracle.
    x: (n, D) inputs in original units.

  Returns:
    (n, M) predictions in original units, >= settings.floor when it is set.

  Raises:
    ValueError: when x does not have shape (n, D).
  """
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[1] != oracle.x_dim:
    raise ValueError(f'x must have shape (n, {oracle.x_dim}), got '
                     f'{tuple(x.shape)}')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return _predict(oracle.settings, oracle.params, oracle.x_scaler,
                  oracle.y_scaler, x)


def predict_members(oracle: Oracle, x) -> Array:
  """(n, D) -> (E, n, M) unclipped member predictions (spread = disagreement).
  """
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2 or x.shape[1] != oracle.x_dim:
    raise ValueError(f'x must have shape (n, {oracle.x_dim}), got '
                     f'{tuple(x.shape)}')
  return _predict_members(oracle.settings, oracle.params, oracle.x_scaler,
                          oracle.y_scaler, x)


@functools.partial(jax.jit, static_argnums=0)
def _predict_members(settings, params, x_scaler, y_scaler, x):
  net = _network(settings, y_scaler.mean.shape[-1])
  out = _members_apply(net, params, x_scaler.forward(x).astype(x.dtype))
  return y_scaler.inverse(out).astype(x.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _predict(settings, params, x_scaler, y_scaler, x):
  members = _predict_members(settings, params, x_scaler, y_scaler, x)
  floor = None
  if settings.floor is not None:
    floor = jnp.full((1, members.shape[-1]), settings.floor, x.dtype)
  return _combine(settings, members, floor)


def _combine(settings: OracleSettings, members: Array,
             floor: Optional[Array]) -> Array:
  """(E, n, M) member outputs -> (n, M) clipped ensemble mean.

  `floor` is (1, M) in the units of `members`, or None for no clipping.
  """
  if floor is None:
    return jnp.mean(members, axis=0)
  if settings.floor_in_loss:
    members = jnp.maximum(members, floor[None])
  return jnp.maximum(jnp.mean(members, axis=0), floor)


def _errors(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
  """Pooled RMSE / MAE over all entries, and over rows with any y != 0."""
  err = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
  nonzero = np.any(y != 0, axis=1)
  out = {'rmse': float(np.sqrt(np.mean(err ** 2))),
         'mae': float(np.mean(np.abs(err))),
         'num_rows': int(y.shape[0]),
         'num_nonzero': int(nonzero.sum())}
  if nonzero.any():
    out['rmse_nonzero'] = float(np.sqrt(np.mean(err[nonzero] ** 2)))
    out['mae_nonzero'] = float(np.mean(np.abs(err[nonzero])))
  else:
    out['rmse_nonzero'] = out['mae_nonzero'] = float('nan')
  return out


def kfold_error(key: Array, x, y, k: int = 5, *,
                progress: Optional[Progress] = None, **settings) -> dict:
  """Held-out error of the oracle by k-fold cross-validation.

  Rows are split into k folds by a key-determined permutation; for each
  fold an oracle (same settings) is trained on the other k - 1 folds and
  predicts the held-out fold, so every row gets one out-of-fold prediction.

  Args:
    key: PRNG key (fold assignment and the k trainings).
    x: (n, D) inputs.
    y: (n, M) outputs.
    k: number of folds, 2 <= k <= n.
    progress: called as progress(epoch, metrics) during every training,
      metrics including 'fold' (0-based).
    **settings: `OracleSettings` fields, as for `fit_oracle`.

  Returns:
    dict with, in the units of y (pooled over all entries):
      'rmse', 'mae': out-of-fold error over all rows;
      'rmse_nonzero', 'mae_nonzero', 'num_nonzero': the same over rows
        where y is not exactly 0 (informative when many rows are 0);
      'std_y': RMSE of the trivial predictor "the mean of y";
      'per_fold': list of k dicts with rmse, mae, rmse_nonzero, ...;
      'k', 'num_rows', 'settings' (dict);
      'predictions': (n, M) float32 out-of-fold predictions.

  Raises:
    ValueError: for bad data, k or settings.
  """
  s = make_settings(**settings)
  x, y = data_lib.check_pairs(x, y)
  n = x.shape[0]
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
      or not 2 <= k <= n:
    raise ValueError(f'k must be an integer in [2, {n}], got {k!r}')
  key_perm, key_fit = jax.random.split(key)
  folds = np.array_split(np.asarray(jax.random.permutation(key_perm, n)),
                         int(k))
  oof = np.zeros_like(y)
  per_fold = []
  for i, held in enumerate(folds):
    rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
    fold_progress = None
    if progress is not None:
      fold_progress = functools.partial(_with_fold, progress, i)
    model = fit_oracle(jax.random.fold_in(key_fit, i), x[rest], y[rest],
                       progress=fold_progress, **s._asdict())
    oof[held] = np.asarray(predict(model, x[held]))
    per_fold.append(_errors(oof[held], y[held]))
  out = _errors(oof, y)
  out.update(std_y=float(np.sqrt(np.mean(
      (y.astype(np.float64) - y.mean(0, dtype=np.float64)[None]) ** 2))),
             per_fold=per_fold, k=int(k), settings=s._asdict(),
             predictions=oof)
  return out


def _with_fold(progress: Progress, fold: int, epoch: int,
               metrics: dict[str, float]) -> None:
  progress(epoch, dict(metrics, fold=fold))


def save_oracle(path: str, oracle: Oracle,
                info: Optional[dict] = None) -> None:
  """Writes an oracle (and a JSON-able `info` dict) to one file, atomically.
  """
  tree = {'params': oracle.params,
          'x_scaler': oracle.x_scaler._asdict(),
          'y_scaler': oracle.y_scaler._asdict()}
  meta = {'settings': oracle.settings._asdict(), 'x_dim': oracle.x_dim,
          'y_dim': oracle.y_dim, 'info': info or {}}
  checkpoint.save_pytree(path, tree, meta)


def load_oracle(path: str) -> Oracle:
  """Reads an oracle written by `save_oracle`.

  Raises:
    ValueError: when the file is missing, unreadable or malformed.
  """
  _, meta = checkpoint.read_pytree(path)
  try:
    s = make_settings(**meta['settings'])
    x_dim, y_dim = int(meta['x_dim']), int(meta['y_dim'])
  except (KeyError, TypeError) as e:
    raise ValueError(f'{path!r} is not an oracle file: {e}') from e
  net = _network(s, y_dim)
  shapes = jax.eval_shape(
      lambda k: jax.vmap(net.init, in_axes=(0, None))(
          jax.random.split(k, s.members), jnp.zeros((1, x_dim))),
      jax.random.PRNGKey(0))
  zeros = lambda d: np.zeros((d,), np.float32)
  template = {
      'params': jax.tree_util.tree_map(
          lambda a: np.zeros(a.shape, a.dtype), shapes),
      'x_scaler': {'mean': zeros(x_dim), 'scale': zeros(x_dim)},
      'y_scaler': {'mean': zeros(y_dim), 'scale': zeros(y_dim)}}
  tree, _ = checkpoint.load_pytree(path, template)
  as_jnp = lambda t: jax.tree_util.tree_map(jnp.asarray, t)
  return Oracle(as_jnp(tree['params']),
                data_lib.Standardizer(**as_jnp(tree['x_scaler'])),
                data_lib.Standardizer(**as_jnp(tree['y_scaler'])), s)


def read_oracle_info(path: str) -> dict:
  """The `info` dict stored by `save_oracle` (e.g. its k-fold error)."""
  _, meta = checkpoint.read_pytree(path)
  return dict(meta.get('info', {}))
