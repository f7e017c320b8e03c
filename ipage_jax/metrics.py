"""Evaluation metrics: re-simulation error, mode coverage, diversity, r_T,
calibration of sampled posteriors (SBC ranks, expected coverage).

All functions are pure functions of arrays (jnp in, jnp out) except where a
docstring says otherwise. Timing is measured by the caller and recorded in a
`TimeToSolution`.
"""

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

Simulator = Callable[[jax.Array], jax.Array]


class ResimulationError(NamedTuple):
  """Re-simulation error of a set of solutions.

  Attributes:
    per_sample: `(n,)` ||Omega(x_i) - y*_i||^2 (sum over the M outputs); NaN
      where the simulator gives a non-finite value.
    mean: scalar mean of `per_sample` over the finite rows (NaN if none).
    num_invalid: scalar int32 number of non-finite rows, left out of `mean`.
  """

  per_sample: jax.Array
  mean: jax.Array
  num_invalid: jax.Array


class ModeCoverage(NamedTuple):
  """Mode coverage of a set of solutions.

  Attributes:
    num_covered: scalar int32 number of modes with at least one accurate
      solution.
    smallest_share: scalar share, among accurate solutions, of the least
      populated mode (0 when a mode is empty or no solution is accurate).
    counts: `(num_modes,)` int32 accurate solutions per mode.
  """

  num_covered: jax.Array
  smallest_share: jax.Array
  counts: jax.Array


class TimeToSolution(NamedTuple):
  """Wall time [s] of the inference (sampling) and localization phases."""

  inference_s: float
  localization_s: float

  @property
  def total_s(self) -> float:
    """Inference plus localization [s]."""
    return self.inference_s + self.localization_s


@jax.jit
def _per_sample_error(y: jax.Array, y_target: jax.Array) -> ResimulationError:
  """Squared error `(n,)` of `y` `(n, M)` against `y_target` `(n, M)`."""
  per_sample = jnp.sum((y - y_target) ** 2, axis=-1)
  finite = jnp.isfinite(per_sample)
  per_sample = jnp.where(finite, per_sample, jnp.nan)
  num_valid = jnp.sum(finite)
  total = jnp.sum(jnp.where(finite, per_sample, 0.0))
  mean = jnp.where(
      num_valid > 0, total / jnp.maximum(num_valid, 1), jnp.nan
  )
  num_invalid = (per_sample.shape[0] - num_valid).astype(jnp.int32)
  return ResimulationError(per_sample, mean, num_invalid)


def resimulation_error(
    simulate: Simulator, x: jax.Array, y_target: jax.Array
) -> ResimulationError:
  """Q = mean_i ||Omega(x_i) - y*||^2 with the true simulator Omega.

  Args:
    simulate: `(n, D) -> (n, M)` forward process Omega.
    x: `(n, D)` solutions.
    y_target: `(M,)` one target for every row, or `(n, M)` one per row.

  Returns:
    `ResimulationError(per_sample (n,), mean, num_invalid)`; rows where the
    simulator returns NaN/inf are counted in `num_invalid`, not averaged.
  """
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'x must have shape (n, D); got {tuple(x.shape)}')
  y = jnp.asarray(simulate(x))
  if y.ndim != 2 or y.shape[0] != x.shape[0]:
    raise ValueError(
        f'simulate returned shape {tuple(y.shape)}; expected '
        f'({x.shape[0]}, M)'
    )
  y_target = jnp.asarray(y_target, y.dtype)
  if y_target.shape == (y.shape[1],):
    y_target = jnp.broadcast_to(y_target[None, :], y.shape)
  elif y_target.shape != y.shape:
    raise ValueError(
        f'y_target must have shape ({y.shape[1]},) or {tuple(y.shape)}; got '
        f'{tuple(y_target.shape)}'
    )
  return _per_sample_error(y, y_target)


def protocol_a_error(
    simulate: Simulator, x: jax.Array, targets: jax.Array
) -> ResimulationError:
  """Protocol A (paper Table 2): T targets, one solution per target.

  Args:
    simulate: `(T, D) -> (T, M)` forward process.
    x: `(T, D)`, row t is the solution proposed for target t.
    targets: `(T, M)` targets, e.g. held-out data outputs.

  Returns:
    `ResimulationError` over the T (solution, target) pairs.
  """
  targets = jnp.asarray(targets)
  x = jnp.asarray(x)
  if targets.ndim != 2 or x.ndim != 2 or targets.shape[0] != x.shape[0]:
    raise ValueError(
        'protocol A needs x (T, D) and targets (T, M) with the same T; got '
        f'x {tuple(x.shape)} and targets {tuple(targets.shape)}'
    )
  return resimulation_error(simulate, x, targets)


def protocol_b_error(
    simulate: Simulator, x: jax.Array, target: jax.Array
) -> ResimulationError:
  """Protocol B (paper Table 3): one target, N solutions.

  Args:
    simulate: `(N, D) -> (N, M)` forward process.
    x: `(N, D)` solutions for the one target.
    target: `(M,)` the target (usually the task's default).

  Returns:
    `ResimulationError` over the N solutions.
  """
  target = jnp.asarray(target)
  if target.ndim != 1:
    raise ValueError(
        f'protocol B needs one target of shape (M,); got {tuple(target.shape)}'
    )
  return resimulation_error(simulate, x, target)


def mode_coverage(
    mode_index: jax.Array,
    y_error_abs: jax.Array,
    num_modes: int,
    tol: float = 0.05,
) -> ModeCoverage:
  """How many modes the accurate solutions reach, and how evenly.

  A solution is accurate when |Omega(x) - y*| < tol (NaN counts as not
  accurate); for M > 1 outputs the largest component is used.

  Args:
    mode_index: `(n,)` int mode of each solution in [0, num_modes); other
      values belong to no mode.
    y_error_abs: `(n,)` or `(n, M)` absolute errors |Omega(x) - y*|.
    num_modes: number of modes (9 for the sinewave).
    tol: accuracy threshold (the paper uses 0.05).

  Returns:
    `ModeCoverage(num_covered, smallest_share, counts)`; `smallest_share` is
    min_k counts_k / sum_k counts_k.
  """
  if isinstance(num_modes, bool) or not isinstance(
      num_modes, (int, np.integer)
  ) or num_modes < 1:
    raise ValueError(f'num_modes must be a positive integer; got {num_modes!r}')
  if not tol > 0:
    raise ValueError(f'tol must be positive; got {tol!r}')
  mode_index = jnp.asarray(mode_index)
  err = jnp.asarray(y_error_abs)
  if err.ndim == 2:
    err = jnp.max(jnp.abs(err), axis=-1)
  if mode_index.ndim != 1 or err.shape != mode_index.shape:
    raise ValueError(
        'mode_index must be (n,) and y_error_abs (n,) or (n, M); got '
        f'{tuple(mode_index.shape)} and {tuple(jnp.shape(y_error_abs))}'
    )
  return _mode_coverage(mode_index, err, tol, int(num_modes))


@functools.partial(jax.jit, static_argnums=3)
def _mode_coverage(mode_index, err, tol, num_modes) -> ModeCoverage:
  accurate = jnp.abs(err) < tol
  onehot = mode_index[:, None] == jnp.arange(num_modes)[None, :]
  counts = jnp.sum(onehot & accurate[:, None], axis=0).astype(jnp.int32)
  total = jnp.sum(counts)
  num_covered = jnp.sum(counts > 0).astype(jnp.int32)
  smallest_share = jnp.where(
      total > 0, jnp.min(counts) / jnp.maximum(total, 1), 0.0
  )
  return ModeCoverage(num_covered, smallest_share, counts)


def diversity(x: jax.Array, *, batch_size: int = 256) -> jax.Array:
  """Mean pairwise Euclidean distance of the solutions.

  mean_{i < j} ||x_i - x_j||, computed row block by row block (memory
  O(batch_size * n * D)) so that it also fits for large D.

  Args:
    x: `(n, D)` solutions, n >= 2.
    batch_size: rows per block.

  Returns:
    Scalar mean distance.
  """
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'x must have shape (n >= 2, D); got {tuple(x.shape)}')
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)
  ) or batch_size < 1:
    raise ValueError(
        f'batch_size must be a positive integer; got {batch_size!r}'
    )
  return _diversity(x, min(int(batch_size), x.shape[0]))


@functools.partial(jax.jit, static_argnums=1)
def _diversity(x: jax.Array, batch_size: int) -> jax.Array:
  n = x.shape[0]

  def row_sum(xi):
    d2 = jnp.sum((x - xi[None, :]) ** 2, axis=-1)
    # The zero self-distance has no gradient through sqrt; keep it finite.
    safe = jnp.where(d2 > 0.0, d2, 1.0)
    return jnp.sum(jnp.where(d2 > 0.0, jnp.sqrt(safe), 0.0))

  sums = jax.lax.map(row_sum, x, batch_size=batch_size)
  return jnp.sum(sums) / (n * (n - 1))


def _subset_min_weights(n: int, t: int) -> np.ndarray:
  """`(n,)` P(the i-th smallest of n values is the min of a random t-subset)."""
  i = np.arange(1, n + 1)
  k = n - i  # values larger than the i-th smallest
  ok = k >= t - 1
  kk = np.where(ok, k, t - 1)
  log_w = (
      special.gammaln(kk + 1)
      - special.gammaln(t)
      - special.gammaln(kk - t + 2)
      - (special.gammaln(n + 1) - special.gammaln(t + 1)
         - special.gammaln(n - t + 1))
  )
  return np.where(ok, np.exp(log_w), 0.0)


def r_t_curve(
    errors: jax.Array, ts: Sequence[int], *, estimator: str = 'prefix'
) -> jax.Array:
  """Best-of-T re-simulation error r_T (Ren et al. 2020, paper eq. 16).

  r_T = E_targets[min over T proposed solutions of the error]. Two
  estimators of the inner expectation, per target, from n proposals:
    'prefix': the min over the first T proposals, in the given order (what a
      user who stops after T proposals gets; one draw of the random min).
    'subset': the exact mean of that min over all T-subsets of the n
      proposals, sum_i e_(i) C(n - i, T - 1) / C(n, T) with e_(1) <= ... the
      sorted errors; unbiased for i.i.d. proposals and of lower variance.
  Non-finite errors (failed re-simulations) never count as the best; if a
  minimum can only come from them the result is NaN.

  Args:
    errors: `(num_targets, n)` or `(n,)` re-simulation errors.
    ts: sizes T, each in [1, n] (static Python ints).
    estimator: 'prefix' or 'subset'.

  Returns:
    `(len(ts),)` r_T averaged over targets.
  """
  errors = jnp.asarray(errors)
  if errors.ndim == 1:
    errors = errors[None, :]
  if errors.ndim != 2 or errors.shape[1] < 1:
    raise ValueError(
        f'errors must be (num_targets, n) or (n,); got {tuple(errors.shape)}'
    )
  n = errors.shape[1]
  ts = [int(t) for t in ts]
  if not ts or any(t < 1 or t > n for t in ts):
    raise ValueError(f'each T in ts must lie in [1, {n}]; got {ts}')
  if estimator == 'prefix':
    return _r_t_prefix(errors, np.asarray(ts) - 1)
  if estimator == 'subset':
    weights = np.stack([_subset_min_weights(n, t) for t in ts])
    return _r_t_subset(errors, jnp.asarray(weights, errors.dtype))
  raise ValueError(
      f"estimator must be 'prefix' or 'subset'; got {estimator!r}"
  )


def _best_to_mean(best: jax.Array) -> jax.Array:
  best = jnp.where(jnp.isfinite(best), best, jnp.nan)
  return jnp.mean(best, axis=0)


@jax.jit
def _r_t_prefix(errors: jax.Array, last: jax.Array) -> jax.Array:
  """errors `(targets, n)`, last `(k,)` 0-based T - 1 -> `(k,)`."""
  e = jnp.where(jnp.isfinite(errors), errors, jnp.inf)
  return _best_to_mean(jax.lax.cummin(e, axis=1)[:, last])


@jax.jit
def _r_t_subset(errors: jax.Array, weights: jax.Array) -> jax.Array:
  """errors `(targets, n)`, weights `(k, n)` -> `(k,)`."""
  e = jnp.sort(jnp.where(jnp.isfinite(errors), errors, jnp.inf), axis=1)
  # Zero weights must not meet inf errors (0 * inf = nan).
  terms = jnp.where(
      weights[None, :, :] > 0.0, weights[None, :, :] * e[:, None, :], 0.0
  )
  return _best_to_mean(jnp.sum(terms, axis=-1))


def first_crossing(curve: jax.Array, threshold: float) -> jax.Array:
  """First index where a loss curve reaches the threshold.

  For "localization steps needed to reach a given Q".

  Args:
    curve: `(S,)` values, e.g. Q after each localization step.
    threshold: target value.

  Returns:
    Scalar int32: the smallest s with curve[s] <= threshold, or -1 if none.
  """
  curve = jnp.asarray(curve)
  if curve.ndim != 1 or curve.shape[0] < 1:
    raise ValueError(f'curve must have shape (S,); got {tuple(curve.shape)}')
  hit = curve <= threshold
  return jnp.where(
      jnp.any(hit), jnp.argmax(hit), -1
  ).astype(jnp.int32)


# ------------------------------------------------------------ calibration


class Calibration(NamedTuple):
  """Calibration of a sampled posterior against known true designs.

  Attributes:
    ranks: `(T, D)` int32 SBC rank of each true coordinate among the L
      posterior samples of its target, in [0, L] (Talts et al. 2018).
    rank_chi2: `(D,)` chi-square statistic of the rank histogram against
      the uniform one (`num_bins` bins).
    rank_p_value: `(D,)` its p-value; small values: not calibrated.
    levels: `(K,)` credibility levels.
    central_coverage: `(K, D)` share of targets whose true coordinate lies
      in the central credible interval of that level (per dimension).
    hpd_coverage: `(K,)` share of targets whose true design lies in the
      highest-density region of that level (joint over the D dimensions).
  """

  ranks: jax.Array
  rank_chi2: jax.Array
  rank_p_value: jax.Array
  levels: jax.Array
  central_coverage: jax.Array
  hpd_coverage: jax.Array


DEFAULT_LEVELS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))


def _check_posterior(x_true, samples):
  x_true, samples = jnp.asarray(x_true), jnp.asarray(samples)
  if (x_true.ndim != 2 or samples.ndim != 3
      or samples.shape[0] != x_true.shape[0]
      or samples.shape[2] != x_true.shape[1] or samples.shape[1] < 2):
    raise ValueError(
        'x_true must be (T, D) and samples (T, L, D) with L >= 2; got '
        f'{tuple(x_true.shape)} and {tuple(samples.shape)}')
  if not (bool(jnp.all(jnp.isfinite(x_true)))
          and bool(jnp.all(jnp.isfinite(samples)))):
    raise ValueError('x_true and samples must be finite')
  return x_true, samples


@jax.jit
def sbc_ranks(x_true: jax.Array, samples: jax.Array) -> jax.Array:
  """`(T, D)` number of the L samples below the true value, per coordinate.

  For x_true drawn from the prior, y from the forward process and samples
  from an exact posterior p(x | y), each rank is uniform on {0, ..., L}
  (simulation-based calibration, Talts et al. 2018, arXiv:1804.06788).
  """
  return jnp.sum(samples < x_true[:, None, :], axis=1).astype(jnp.int32)


def rank_uniformity(ranks: jax.Array, num_samples: int, num_bins: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Chi-square test of uniform SBC ranks, per dimension.

  Args:
    ranks: `(T, D)` ranks in [0, num_samples].
    num_samples: L, the posterior samples per target.
    num_bins: histogram bins; rank r falls in bin floor(r B / (L + 1)), so
      the expected counts are equal when B divides L + 1.

  Returns:
    (chi2 `(D,)`, p-value `(D,)`), numpy arrays (scipy's chi-square
    survival function with B - 1 degrees of freedom).
  """
  ranks = np.asarray(ranks)
  if not 2 <= num_bins <= num_samples + 1:
    raise ValueError(f'num_bins must lie in [2, L + 1 = {num_samples + 1}]; '
                     f'got {num_bins}')
  bins = (ranks * num_bins) // (num_samples + 1)
  counts = np.stack([np.bincount(b, minlength=num_bins) for b in bins.T], 1)
  # Exact bin probabilities: the ranks r with floor(r B / (L + 1)) = b.
  r = np.arange(num_samples + 1)
  prob = np.bincount((r * num_bins) // (num_samples + 1),
                     minlength=num_bins) / (num_samples + 1)
  expected = prob[:, None] * ranks.shape[0]
  chi2 = np.sum((counts - expected) ** 2 / expected, axis=0)
  return chi2, special.gammaincc((num_bins - 1) / 2.0, chi2 / 2.0)


@jax.jit
def central_coverage(x_true: jax.Array, samples: jax.Array,
                     levels: jax.Array) -> jax.Array:
  """`(K, D)` share of targets inside the central credible intervals.

  The interval of level a is [q_{(1-a)/2}, q_{(1+a)/2}] of each marginal of
  the target's samples; for a calibrated posterior the share is a.
  """
  lo = jnp.quantile(samples, (1.0 - levels) / 2.0, axis=1)  # (K, T, D)
  hi = jnp.quantile(samples, (1.0 + levels) / 2.0, axis=1)
  inside = (x_true[None] >= lo) & (x_true[None] <= hi)  # (K, T, D)
  return jnp.mean(inside, axis=1)


@jax.jit
def hpd_credibility(x_true: jax.Array, samples: jax.Array) -> jax.Array:
  """`(T,)` credibility of the smallest HPD region holding the true design.

  The posterior density of each target is a Gaussian kernel density
  estimate of its L samples (diagonal bandwidth, Scott's rule
  std L^(-1/(D+4)) per dimension); the credibility of x_true is the share
  of samples whose (leave-one-out) density exceeds the density at x_true.
  For a calibrated posterior it is uniform on [0, 1].
  """
  num, dim = samples.shape[1], samples.shape[2]
  scale = jnp.std(samples, axis=1) * num ** (-1.0 / (dim + 4))  # (T, D)
  scale = jnp.maximum(scale, jnp.finfo(samples.dtype).tiny)

  def log_kernel(a, b, h):  # (n, D), (L, D), (D,) -> (n, L)
    d = (a[:, None, :] - b[None, :, :]) / h[None, None, :]
    return -0.5 * jnp.sum(d * d, -1)

  def one(x, s, h):
    k_ss = jnp.exp(log_kernel(s, s, h))
    loo = (jnp.sum(k_ss, 1) - 1.0) / (num - 1)         # (L,) diagonal is 1
    at_true = jnp.mean(jnp.exp(log_kernel(x[None], s, h)))
    return jnp.mean(loo > at_true)

  return jax.vmap(one)(x_true, samples, scale)


def calibration(x_true, samples, levels: Sequence[float] = DEFAULT_LEVELS,
                num_bins: int = 10) -> Calibration:
  """SBC ranks and expected coverage of a sampled posterior.

  Args:
    x_true: `(T, D)` true designs, drawn from the prior (e.g. held-out data
      rows), whose forward values y_t were the targets.
    samples: `(T, L, D)` posterior samples for each y_t (same units).
    levels: credibility levels in (0, 1).
    num_bins: bins of the rank histogram.

  Returns:
    A `Calibration`. For an exact posterior the ranks are uniform and every
    coverage equals its level up to sampling noise of std
    sqrt(a (1 - a) / T).
  """
  x_true, samples = _check_posterior(x_true, samples)
  levels = jnp.asarray(levels, samples.dtype)
  if levels.ndim != 1 or not bool(jnp.all((levels > 0) & (levels < 1))):
    raise ValueError(f'levels must be a 1-D list in (0, 1); got {levels}')
  ranks = sbc_ranks(x_true, samples)
  chi2, p_value = rank_uniformity(ranks, samples.shape[1], num_bins)
  credibility = hpd_credibility(x_true, samples)
  hpd = jnp.mean(credibility[None, :] <= levels[:, None], axis=1)
  return Calibration(ranks, jnp.asarray(chi2), jnp.asarray(p_value), levels,
                     central_coverage(x_true, samples, levels), hpd)


def rejection_posterior(key: jax.Array, sample_prior: Callable,
                        simulate: Simulator, targets, num_samples: int,
                        tol: float, *, pool_size: int = 1_000_000,
                        max_rounds: int = 50) -> np.ndarray:
  """Reference posterior samples by rejection (approximate Bayesian comp.).

  Draws x from the prior in pools and keeps, per target y_t, the first
  `num_samples` with ||Omega(x) - y_t||_inf < tol: exact samples of
  p(x | ||Omega(x) - y_t|| < tol), which tends to p(x | y_t) as tol -> 0.
  Host-side loop over pools (numpy), for evaluation only.

  Args:
    key: PRNG key of the prior draws.
    sample_prior: `(key, n) -> (n, D)`.
    simulate: `(n, D) -> (n, M)` forward process.
    targets: `(T, M)` targets.
    num_samples: L samples per target.
    tol: acceptance half-width on every output (> 0).
    pool_size: prior draws per round.
    max_rounds: give up (ValueError) after this many pools.

  Returns:
    `(T, L, D)` float32 samples.
  """
  targets = np.asarray(targets, np.float32)
  if targets.ndim != 2:
    raise ValueError(f'targets must be (T, M); got {targets.shape}')
  if not tol > 0:
    raise ValueError(f'tol must be > 0; got {tol!r}')
  found = [[] for _ in targets]
  counts = np.zeros(len(targets), int)
  for r in range(max_rounds):
    x = np.asarray(sample_prior(jax.random.fold_in(key, r), pool_size))
    y = np.asarray(simulate(jnp.asarray(x)))
    for t, target in enumerate(targets):
      if counts[t] >= num_samples:
        continue
      hit = np.flatnonzero(np.all(np.abs(y - target) < tol, -1))
      hit = hit[:num_samples - counts[t]]
      found[t].append(x[hit])
      counts[t] += hit.size
    if np.all(counts >= num_samples):
      return np.stack([np.concatenate(f) for f in found]).astype(np.float32)
  raise ValueError(
      f'rejection sampling found only {int(counts.min())} of {num_samples} '
      f'samples for some target after {max_rounds} pools of {pool_size}; '
      'raise tol or pool_size')
