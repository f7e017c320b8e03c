"""Losses of the bi-directional INN training (the paper's eqs. 2-4, 12-13).

All losses take standardized data and return scalars. Kernel widths are in
the units of the standardized data.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# Widths of the inverse-multiquadric kernels summed in the multi-scale MMD.
DEFAULT_WIDTHS = (0.2, 0.5, 0.9, 1.3)


def _squared_distances(a: Array, b: Array) -> Array:
  """(n, d), (m, d) -> (n, m) squared Euclidean distances (never < 0)."""
  d2 = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
        - 2.0 * a @ b.T)
  return jnp.maximum(d2, 0.0)


def imq_kernel(a: Array, b: Array,
               widths: Sequence[float] = DEFAULT_WIDTHS) -> Array:
  """Multi-scale inverse-multiquadric kernel matrix.

  k(a, b) = sum_h h^2 / (h^2 + ||a - b||^2), so k(a, a) = len(widths).

  Args:
    a: (n, d) points.
    b: (m, d) points.
    widths: kernel widths h.

  Returns:
    (n, m) kernel matrix.
  """
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(
        f'imq_kernel expects (n, d) and (m, d), got {a.shape} and {b.shape}')
  if not widths or min(widths) <= 0:
    raise ValueError(f'kernel widths must be positive, got {widths}')
  d2 = _squared_distances(a, b)
  return sum(h * h / (h * h + d2) for h in widths)


def mmd(a: Array, b: Array, widths: Sequence[float] = DEFAULT_WIDTHS, *,
        unbiased: bool = False, weights: Optional[Array] = None) -> Array:
  """Squared maximum mean discrepancy between two samples (Gretton 2012).

  Args:
    a: (n, d) sample of the first distribution.
    b: (m, d) sample of the second.
    widths: IMQ kernel widths (see `imq_kernel`).
    unbiased: drop the diagonal terms of the within-sample averages (the
      U-statistic; can be slightly negative). The biased V-statistic is >= 0.
    weights: optional (n, n) symmetric positive semi-definite matrix that
      multiplies all three kernel matrices (n = m, row i of a and of b
      paired, e.g. by a shared condition): the MMD of the product kernel
      k(a, a') w(c, c'), see `conditional_weights`.

  Returns:
    Scalar MMD^2 estimate.
  """
  n, m = a.shape[0], b.shape[0]
  if weights is not None and weights.shape != (n, n) or (
      weights is not None and m != n):
    raise ValueError(f'weights must be ({n}, {n}) with paired samples, got '
                     f'{None if weights is None else weights.shape} for '
                     f'{n} and {m} rows')
  weigh = (lambda k: k) if weights is None else (lambda k: k * weights)
  kaa, kbb, kab = (_kernel_sum(weigh(imq_kernel(a, a, widths))),
                   _kernel_sum(weigh(imq_kernel(b, b, widths))),
                   _kernel_sum(weigh(imq_kernel(a, b, widths))))
  if unbiased:
    if n < 2 or m < 2:
      raise ValueError('the unbiased MMD needs at least 2 points per sample')
    kdiag = float(len(widths))  # k(a, a) for every point
    if weights is not None:
      kdiag = kdiag * jnp.mean(jnp.diag(weights))
    within_a = (kaa - n * kdiag) / (n * (n - 1))
    within_b = (kbb - m * kdiag) / (m * (m - 1))
  else:
    within_a, within_b = kaa / (n * n), kbb / (m * m)
  return within_a + within_b - 2.0 * kab / (n * m)


def conditional_weights(c: Array, width: float) -> Array:
  """(n, n) Gaussian kernel exp(-||c_i - c_j||^2 / (2 width^2)) of (n, k) c.

  As `mmd(..., weights=)` it turns an MMD between paired samples into one
  of the joint (sample, condition) distributions: zero only if the
  conditional distributions agree for every condition (Ardizzone et al.
  2018, the y-weighted backward MMD of their training code).
  """
  if not width > 0:
    raise ValueError(f'width must be > 0, got {width}')
  return jnp.exp(-_squared_distances(c, c) / (2.0 * width * width))


def _kernel_sum(k: Array) -> Array:
  """Sum of all entries of an (n, m) kernel matrix, as a matrix-vector product.

  Same value as `k.sum()`; under `value_and_grad`, XLA:CPU compiles the full
  reduction of a kernel matrix into a slow fused loop (about 13x slower at
  n = m = 1024 than this form).
  """
  return jnp.sum(k @ jnp.ones((k.shape[1],), k.dtype))


def fit_loss(prediction: Array, target: Array) -> Array:
  """Mean squared error over rows and columns, (n, k), (n, k) -> scalar."""
  if prediction.shape != target.shape:
    raise ValueError(
        f'fit_loss shapes differ: {prediction.shape} vs {target.shape}')
  return jnp.mean(jnp.square(prediction - target))


def latent_loss(y_pred: Array, z_pred: Array, y: Array, z_prior: Array,
                widths: Sequence[float] = DEFAULT_WIDTHS, *,
                unbiased: bool = False) -> Array:
  """L_z: MMD of [stop_grad(f_y(x)), f_z(x)] against [y, z ~ N(0, I)].

  Matching the joint (not just z) pushes z to be standard normal AND
  independent of y; the stop-gradient leaves the fit of y to L_y.

  Args:
    y_pred: (n, M) forward prediction of y.
    z_pred: (n, K) forward latent output.
    y: (n, M) data properties.
    z_prior: (n, K) standard-normal draws.
  """
  joint_pred = jnp.concatenate([jax.lax.stop_gradient(y_pred), z_pred], -1)
  joint_ref = jnp.concatenate([y, z_prior], -1)
  return mmd(joint_pred, joint_ref, widths, unbiased=unbiased)


def backward_loss(x_pred: Array, x: Array,
                  widths: Sequence[float] = DEFAULT_WIDTHS, *,
                  unbiased: bool = False, y: Optional[Array] = None,
                  y_width: float = 0.0) -> Array:
  """L_x: MMD between f^-1([y, z]) (n, D) and the data x (n, D).

  With `y` (n, M), the y of both rows i, and `y_width` > 0 the MMD is
  weighted by `conditional_weights(y, y_width)`: it compares the
  posteriors p(x | y) instead of the marginals p(x).
  """
  weights = None
  if y_width:
    weights = conditional_weights(y, y_width)
  return mmd(x_pred, x, widths, unbiased=unbiased, weights=weights)


def max_likelihood_loss(y_pred: Array, z_pred: Array, y: Array,
                        log_det: Array, sigma: float,
                        pad: Optional[Array] = None,
                        pad_sigma: float = 1.0) -> Array:
  """Maximum-likelihood INN loss (Kruse et al. 2021; iPage paper eq. 12).

  0.5 * (||y_pred - y||^2 / sigma^2 + ||z||^2 + ||pad||^2 / pad_sigma^2)
  - log|det J|, batch mean: the negative log-density of the padded x under
  y ~ N(y_true, sigma^2), z ~ N(0, I) and padding outputs ~ N(0, pad_sigma^2)
  (Ardizzone et al. 2019, their maximum-likelihood variant). The
  log-determinant penalizes squeezing information about x into small
  outputs, which the MMD losses do not see.

  Args:
    y_pred: (n, M) forward prediction of y.
    z_pred: (n, K) latent output.
    y: (n, M) data properties.
    log_det: (n,) log |det J_{x -> [y, z, pad]}|.
    sigma: assumed standard deviation of y around the truth (> 0).
    pad: optional (n, P) padding outputs.
    pad_sigma: their assumed standard deviation (> 0), e.g. the noise put
      in the padding inputs.
  """
  if sigma <= 0 or pad_sigma <= 0:
    raise ValueError(f'sigma and pad_sigma must be > 0, got {sigma}, '
                     f'{pad_sigma}')
  nll = 0.5 * (jnp.sum(jnp.square(y_pred - y), -1) / sigma**2
               + jnp.sum(jnp.square(z_pred), -1)) - log_det
  if pad is not None and pad.shape[1]:
    nll = nll + 0.5 * jnp.sum(jnp.square(pad), -1) / pad_sigma**2
  return jnp.mean(nll)


def conditional_nll(z: Array, log_det: Array) -> Array:
  """Per-row cINN negative log-likelihood 0.5 ||z||^2 - log|det J_{x -> z | y}|.

  Args:
    z: (n, K) latent output of the conditional network.
    log_det: (n,) its log-determinant.

  Returns:
    (n,) NLL of each row (up to the constant K/2 log 2 pi).
  """
  return 0.5 * jnp.sum(jnp.square(z), -1) - log_det


def conditional_max_likelihood_loss(z: Array, log_det: Array) -> Array:
  """cINN loss: the batch mean of `conditional_nll`."""
  return jnp.mean(conditional_nll(z, log_det))


def make_inn_objective(inn, weights_fn, *, objective: str = 'mmd',
                       widths: Sequence[float] = DEFAULT_WIDTHS,
                       unbiased: bool = False, y_noise: float = 0.0,
                       pad_noise: float = 0.0, ml_sigma: float = 0.1,
                       pad_weight: float = 1.0, rec_weight: float = 0.0,
                       rec_noise: float = 0.0, backward_y_width: float = 0.0,
                       x_noise: float = 0.0):
  """The INN training loss `loss_fn(params, x, y, key, step) -> (loss, aux)`.

  objective='mmd' is iPage's dynamic bi-directional loss
  lam_x L_x + lam_y L_y + lam_z L_z with the weights `weights_fn(step)`
  (see `schedules.bidirectional_weights`); both directions are evaluated on
  the same batch, so one gradient accumulates both. objective='ml' keeps
  the same schedule with the maximum-likelihood loss (eq. 12,
  `max_likelihood_loss`) in place of L_x and L_z: lam_y L_y + lam_x L_ml,
  so the forward fit (the surrogate) is trained first and the density
  afterwards. With padding outputs, L_ml models them as N(0, pad_noise^2),
  the noise of the padding inputs.

  Args:
    inn: a `flows.INN` (unbound module; parameters come per call).
    weights_fn: step -> `schedules.LossWeights`.
    objective: 'mmd' or 'ml'.
    widths: MMD kernel widths.
    unbiased: unbiased MMD estimator.
    y_noise: std of the Gaussian noise added to y (standardized units).
    pad_noise: std of the noise put in zero-padding columns.
    ml_sigma: sigma of eq. 12.
    pad_weight: constant weight of L_pad, the mean square of the padding
      outputs (columns after y and z), which pushes them to 0 where
      sampling puts 0 (Ardizzone et al. 2019).
    rec_weight: constant weight of L_rec, the reconstruction of the padded
      x from f^-1([y, f_z(x), fresh padding noise]) with y and the
      (stop-gradient) latent perturbed by `rec_noise`: whatever the padding
      outputs carry about x is lost when sampling puts 0 there, so this
      term asks that y and z alone determine x (Ardizzone et al. 2019, the
      reconstruction term of their training code). 0: off.
    rec_noise: std of the perturbation of y and z in L_rec.
    x_noise: std of Gaussian noise added to the training x (standardized
      units; dequantizes discrete designs such as binary cells, whose
      density is otherwise degenerate for maximum likelihood). 0: off.
    backward_y_width: > 0 makes L_x the y-weighted MMD of `backward_loss`
      (kernel width in standardized y units): posterior against posterior
      rather than marginal against marginal. 0: the paper's marginal L_x.

  Returns:
    loss_fn; `aux` holds l_x, l_y, l_z, l_pad, l_rec (and the lambdas for
    'mmd'). For
    'mmd', a term whose weight is 0 at a step is skipped and reported as 0.
  """
  if objective not in ('mmd', 'ml'):
    raise ValueError(f"unknown objective {objective!r}; expected 'mmd' or 'ml'")
  y_dim, z_dim, width = inn.y_dim, inn.z_dim, inn.width

  def noisy_pad(v, num_data_cols, key):
    """Noise in the padding columns [num_data_cols:] of v (n, width)."""
    if pad_noise == 0.0 or num_data_cols == width:
      return v
    noise = pad_noise * jax.random.normal(key, v.shape, v.dtype)
    mask = jnp.arange(width)[None, :] >= num_data_cols
    return v + jnp.where(mask, noise, 0.0)

  def loss_fn(params, x, y, key, step):
    k_pad, k_y, k_z, k_back, k_rec, k_x = jax.random.split(key, 6)
    if x_noise:
      x = x + x_noise * jax.random.normal(k_x, x.shape, x.dtype)
    v = noisy_pad(inn.pad_x(x), inn.x_dim, k_pad)
    out, log_det = inn.apply(params, v)
    y_pred, z_pred, rest = inn.split_output(out)
    y_noisy = y
    if y_noise:
      y_noisy = y + y_noise * jax.random.normal(k_y, y.shape, y.dtype)
    l_y = fit_loss(y_pred, y_noisy)
    l_pad = jnp.mean(jnp.square(rest)) if rest.shape[1] else jnp.zeros(())
    w = weights_fn(step)
    zero = lambda: jnp.zeros((), x.dtype)
    if objective == 'ml':
      l_ml = jax.lax.cond(w.x > 0, lambda: max_likelihood_loss(
          y_pred, z_pred, y, log_det, ml_sigma, rest, pad_noise or 1.0),
                          zero)
      return w.y * l_y + w.x * l_ml, dict(l_y=l_y, l_ml=l_ml, l_pad=l_pad,
                                          lam_x=w.x, lam_y=w.y)
    z_prior = jax.random.normal(k_z, (x.shape[0], z_dim), x.dtype)

    def latent():
      return latent_loss(y_pred, z_pred, y, z_prior, widths,
                         unbiased=unbiased)

    def backward():
      v_back = noisy_pad(inn.join_yz(y_noisy, z_prior), y_dim + z_dim,
                         k_back)
      x_back, x_pad = inn.split_input(inn.apply(params, v_back,
                                                method='inverse')[0])
      l_x = backward_loss(x_back, x, widths, unbiased=unbiased, y=y,
                          y_width=backward_y_width)
      if x_pad.shape[1]:
        l_x = l_x + jnp.mean(jnp.square(x_pad))
      return l_x

    def reconstruction():
      k_perturb, k_rec_pad = jax.random.split(k_rec)
      yz = jnp.concatenate([y, jax.lax.stop_gradient(z_pred)], -1)
      yz = yz + rec_noise * jax.random.normal(k_perturb, yz.shape, yz.dtype)
      v_rec = noisy_pad(inn.join_yz(yz[:, :y_dim], yz[:, y_dim:]),
                        y_dim + z_dim, k_rec_pad)
      x_rec = inn.apply(params, v_rec, method='inverse')[0]
      return fit_loss(x_rec, inn.pad_x(x))

    # A term whose weight is exactly 0 (the first part of the schedule) is
    # not computed at all: lax.cond runs one branch, which makes forward-only
    # steps about twice as fast. Its aux value is then reported as 0.
    l_z = jax.lax.cond(w.z > 0, latent, zero)
    l_x = jax.lax.cond(w.x > 0, backward, zero)
    l_rec = reconstruction() if rec_weight else jnp.zeros((), x.dtype)
    loss = (w.x * l_x + w.y * l_y + w.z * l_z + pad_weight * l_pad
            + rec_weight * l_rec)
    return loss, dict(l_x=l_x, l_y=l_y, l_z=l_z, l_pad=l_pad, l_rec=l_rec,
                      lam_x=w.x, lam_y=w.y, lam_z=w.z)

  return loss_fn


def make_forward_fit(inn):
  """Validation loss `(params, x, y) -> MSE of f_y(x)` (standardized units)."""

  def forward_fit(params, x, y):
    y_pred = inn.split_output(inn.apply(params, inn.pad_x(x))[0])[0]
    return fit_loss(y_pred, y)

  return forward_fit
