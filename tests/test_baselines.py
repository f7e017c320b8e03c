"""Baselines: objectives against independent math, training, sampling, files."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from ipage_jax import baselines
from ipage_jax import localization
from ipage_jax import methods
from ipage_jax import pipeline
from ipage_jax.baselines import cinn
from ipage_jax.baselines import common
from ipage_jax.baselines import cvae
from ipage_jax.baselines import mdn

import roundoff

BASELINES = ('mdn', 'cinn', 'cvae', 'na')
EPS32 = float(np.finfo(np.float32).eps)


def _tiny_config(epochs=30):
  c = pipeline.default_config()
  c.model.width = 4
  c.model.num_blocks = 2
  c.model.hidden = 16
  c.train.epochs = epochs
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.train.final_learning_rate = 1e-3
  c.solve.localize_steps = 20
  c.solve.localize_learning_rate = 0.05
  c.solve.localize_final_learning_rate = 0.005
  return c


def _data(n=512):
  """x ~ U(-1, 1)^2, y = x1 + x2^2 (a smooth 2 -> 1 problem)."""
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (n, 2),
                                    minval=-1, maxval=1))
  return x, x[:, :1] + x[:, 1:] ** 2


@pytest.fixture(scope='module')
def fitted():
  x, y = _data()
  config = _tiny_config()
  return {name: methods.get(name).fit(jax.random.PRNGKey(1), x, y, config)
          for name in BASELINES}


@pytest.mark.parametrize('name', BASELINES)
def test_training_improves_its_own_objective(fitted, name):
  h = fitted[name].history
  assert np.all(np.isfinite(h['loss']))
  assert h['val_loss'].min() < h['val_loss'][0] - 0.05 * abs(
      h['val_loss'][0])
  assert np.mean(h['loss'][-5:]) < np.mean(h['loss'][:5])


@pytest.mark.parametrize('name', BASELINES)
def test_sampling_shapes_and_determinism(fitted, name):
  method, model = methods.get(name), fitted[name]
  targets = np.array([[0.2], [0.7], [1.1]], np.float32)
  a = method.solve(model, jax.random.PRNGKey(3), targets, 5)
  b = method.solve(model, jax.random.PRNGKey(3), targets, 5)
  c = method.solve(model, jax.random.PRNGKey(4), targets, 5)
  assert a.x.shape == (3, 5, 2) and a.y_surrogate.shape == (3, 5, 1)
  assert np.all(np.isfinite(a.x))
  np.testing.assert_array_equal(a.x, b.x)
  assert not np.allclose(a.x, c.x)
  one = method.solve(model, jax.random.PRNGKey(3), targets[0], 7)
  assert one.x.shape == (7, 2) and one.y_target.shape == (1,)


def test_only_na_localizes_and_ranks(fitted):
  target = np.array([0.5], np.float32)
  for name in BASELINES:
    sols = methods.get(name).solve(fitted[name], jax.random.PRNGKey(0),
                                   target, 4)
    if name == 'na':  # 10 starts per solution, 20 steps each
      assert sols.gradient_steps_per_solution == 200
      assert np.all(np.isfinite(sols.surrogate_error))
    else:
      assert sols.gradient_steps_per_solution == 0
      assert np.all(np.isnan(sols.surrogate_error))
      np.testing.assert_array_equal(sols.x, sols.x_posterior)


def test_na_keeps_the_starts_its_surrogate_ranks_best(fitted):
  model = fitted['na']

  def solve(starts_per_solution, n):
    config = ml_collections.ConfigDict(model.config.to_dict())
    config.solve.localize_steps = 0  # no descent: ranking of the raw starts
    config.na = ml_collections.ConfigDict(
        {'solve': {'oversample': starts_per_solution}})
    return methods.get('na').solve(model._replace(config=config),
                                   jax.random.PRNGKey(5),
                                   np.array([0.3], np.float32), n)

  kept, starts = solve(8.0, 4), solve(1.0, 32)
  assert starts.gradient_steps_per_solution == 0
  # The same 32 starts through the same compiled surrogate; keeping is a
  # gather: exact.
  np.testing.assert_array_equal(np.sort(kept.surrogate_error),
                                np.sort(starts.surrogate_error)[:4])


def test_na_descends_the_surrogate(fitted):
  model = fitted['na']
  target = np.array([0.3], np.float32)
  sols = methods.get('na').solve(model, jax.random.PRNGKey(6), target, 64)
  y = np.asarray(model.y_scaler.inverse(
      model.net.apply(model.best_params,
                      model.x_scaler.forward(jnp.asarray(sols.x_posterior)))))
  before = np.mean(np.square(y - target))
  assert np.mean(sols.surrogate_error) < 0.1 * before


def test_na_boundary_loss_is_zero_inside_and_positive_outside(fitted):
  lower, upper = fitted['na'].x_range
  inside = lower + (upper - lower) * np.array([[0.1, 0.5], [0.9, 0.2]])
  outside = np.array([upper + 0.1, lower - 0.3,
                      [lower[0] - 0.2, 0.5 * (lower[1] + upper[1])]])
  np.testing.assert_array_equal(
      localization.boundary_loss(jnp.asarray(inside), lower, upper), 0.0)
  assert np.all(np.asarray(localization.boundary_loss(
      jnp.asarray(outside), lower, upper)) > 0)


def test_mdn_log_likelihood_matches_scipy():
  rng = np.random.default_rng(0)
  n, k, d = 3, 4, 2
  logits = rng.normal(size=(n, k))
  mean = rng.normal(size=(n, k, d))
  log_std = 0.3 * rng.normal(size=(n, k, d))
  x = rng.normal(size=(n, d))
  # The reference in float64 on the float32 inputs the code sees.
  logits, mean, log_std, x = (np.asarray(np.float32(a), np.float64)
                              for a in (logits, mean, log_std, x))
  got = mdn.log_likelihood(*(jnp.asarray(a, jnp.float32)
                             for a in (logits, mean, log_std, x)))
  w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = [np.log(sum(w[i, j] * stats.multivariate_normal.pdf(
      x[i], mean[i, j], np.diag(np.exp(2 * log_std[i, j])))
      for j in range(k))) for i in range(n)]
  # Float32: z = (x - m) exp(-s) is off by |z| eps ((|x| + |m|) / (2 |x - m|)
  # + 3) (subtraction, exp, product), moving z^2 / 2 by |z| dz + z^2 eps / 2;
  # the d + 2 sums and constants of log N round by eps of its size each;
  # log_softmax and logsumexp add 4 eps of |logit| + |lse| and (K + 2) eps
  # of the result (at least 1: the exp-sum's scale).
  z = (x[:, None] - mean) * np.exp(-log_std)
  dz = np.abs(z) * EPS32 * ((np.abs(x[:, None]) + np.abs(mean))
                            / (2 * np.abs(x[:, None] - mean)) + 3)
  log_n = np.sum(-0.5 * z * z - log_std - 0.5 * np.log(2 * np.pi), -1)
  lse = np.log(np.exp(logits).sum(-1, keepdims=True))
  d_term = (np.sum(np.abs(z) * dz + z * z * EPS32, -1)
            + (d + 2) * EPS32 * np.abs(log_n)
            + 4 * EPS32 * (np.abs(logits) + np.abs(lse)))
  tol = d_term.max(-1) + (k + 2) * EPS32 * np.maximum(1.0, np.abs(want))
  np.testing.assert_array_less(np.abs(np.asarray(got, np.float64) - want), tol)


def test_mdn_samples_follow_the_mixture_weights():
  net = mdn.MixtureNet(x_dim=1, y_dim=1, num_components=2, hidden=4,
                       depth=1)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))
  # depth 1: one Dense layer y -> [logits (2), means (2), log-stds (2)].
  kernel = np.zeros((1, 6), np.float32)
  bias = np.array([np.log(0.25), np.log(0.75), -5.0, 5.0, -3.0, -3.0],
                  np.float32)
  params = {'params': {'MLP_0': {'Dense_0': {'kernel': kernel,
                                             'bias': bias}}}}
  x = np.asarray(mdn.sample(net, params, jax.random.PRNGKey(1),
                            jnp.zeros((1, 1)), 4000, 'srs'))[0, :, 0]
  # MC, i.i.d. draws ('srs'): within 4 standard errors. The share of the
  # 0.75 component is binomial, sqrt(p (1 - p) / n).
  assert abs(np.mean(x > 0) - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(x))
  # log-std -3 through the documented soft clamp b * 2/pi * atan(s / b).
  b = mdn.LOG_SIGMA_BOUND
  want_std = np.exp(b * 2 / np.pi * np.arctan(-3.0 / b))
  # A normal sample's std has relative standard error 1 / sqrt(2 (m - 1)),
  # its mean sigma / sqrt(m), m draws of the component.
  for part in (x[x > 0], x[x < 0]):
    np.testing.assert_allclose(np.std(part), want_std, rtol=4 / np.sqrt(
        2 * (len(part) - 1)))
  pos = x[x > 0]
  np.testing.assert_allclose(np.mean(pos), 5.0, rtol=0,
                             atol=4 * want_std / np.sqrt(len(pos)))


def test_cvae_kl_matches_numerical_integration():
  mean, log_var = 0.7, -0.4
  sd = np.exp(0.5 * log_var)
  p = stats.norm(mean, sd)
  # float32 inputs: the integral is taken at the rounded parameters.
  mean, log_var = float(np.float32(mean)), float(np.float32(log_var))
  sd = np.exp(0.5 * log_var)
  p = stats.norm(mean, sd)
  want, quad_err = integrate.quad(
      lambda t: p.pdf(t) * (p.logpdf(t) - stats.norm.logpdf(t)), -10, 10,
      epsabs=1e-13)
  got = cvae.kl_to_standard_normal(jnp.array([[mean, 0.0]]),
                                   jnp.array([[log_var, 0.0]]))
  # Float32 0.5 (e^v + m^2 - 1 - v): exp (2 eps), square and the three
  # subtractions (eps / 2 each) at the scale of the terms, the row sum of
  # 2 and the half: <= 5 eps of sum |terms|; the tails beyond +-10 sd are
  # below 1e-20.
  terms = np.exp(log_var) + mean ** 2 + 1 + abs(log_var) + 2  # both columns
  np.testing.assert_allclose(got, [want], rtol=0,
                             atol=5 * EPS32 * 0.5 * terms + quad_err)


def test_cinn_samples_invert_the_forward_map(fitted):
  model = fitted['cinn']
  y = jnp.array([[0.4]], jnp.float32)
  x = methods.get('cinn').solve(model, jax.random.PRNGKey(2), np.array(
      [0.4], np.float32), 16).x
  x_std = model.x_scaler.forward(jnp.asarray(x))
  cond = jnp.repeat(model.y_scaler.forward(y), 16, 0)
  z, _ = model.net.apply(model.best_params, x_std, cond)
  back = model.net.apply(model.best_params, z, cond, method='inverse')[0]
  # Round trip of the INN's couplings: roundoff.round_trip_tol, with the
  # inverse's Jacobian at z the inverse of the forward one at x_std.
  jac = roundoff.flow_jacobians(model.net, model.best_params, x_std, cond)
  tol = roundoff.round_trip_tol(x_std, z, np.linalg.inv(jac),
                                roundoff.inn_ulps(model.net))
  assert np.all(np.abs(np.asarray(back, np.float64) - x_std) <= tol)


def _nll64(z, log_det):
  """Float64 cINN NLLs 0.5 |z|^2 - log_det of float32 outputs, and a bound
  on the float32 ones: the squares and their sum of K terms (gamma_K of
  0.5 |z|^2; halving is exact), then the difference (eps / 2 |NLL|)."""
  z, log_det = np.asarray(z, np.float64), np.asarray(log_det, np.float64)
  half_sq = 0.5 * np.sum(z * z, -1)
  nll = half_sq - log_det
  return nll, (roundoff.gamma(z.shape[-1]) * half_sq
               + EPS32 / 2 * np.abs(nll))


def test_cinn_validation_is_the_median_nll(fitted):
  """One held-out row far from the data cannot dominate the keep-best rule."""
  model = fitted['cinn']
  spec = {s.name: s for s in baselines.SPECS}['cinn']
  val_fn = spec.val(model.net, None)
  x, y = _data(64)
  x_std = np.asarray(model.x_scaler.forward(jnp.asarray(x, jnp.float32)))
  y_std = np.asarray(model.y_scaler.forward(jnp.asarray(y, jnp.float32)))
  z, log_det = model.net.apply(model.best_params, x_std, y_std)
  nll, d_nll = _nll64(z, log_det)
  # val_fn runs the same (eager) net.apply on the same rows, so only its
  # float32 NLLs and median round: the sorted values move by at most
  # max d_nll, and the median of an even count adds the rounding of
  # 0.5 a + 0.5 b (eps / 2 |median|).
  val = float(val_fn(model.best_params, x_std, y_std))
  med = np.median(nll)
  assert abs(val - med) <= d_nll.max() + EPS32 / 2 * abs(med)
  x_far = np.concatenate([x_std, np.full((1, 2), 50.0, np.float32)])
  y_far = np.concatenate([y_std, y_std[:1]])
  z_far, log_det_far = model.net.apply(model.best_params, x_far, y_far)
  nll_far, d_far = _nll64(z_far, log_det_far)
  assert nll_far[-1] > 100 * abs(med)  # the outlier's own NLL
  # 65 rows: the median is the 33rd value itself, between the middle two
  # of the other 64 (the outlier being far the largest), up to their
  # max d_far.
  val_far = float(val_fn(model.best_params, x_far, y_far))
  bulk, d_bulk = np.sort(nll_far[:-1]), d_far[:-1].max()
  assert bulk[31] - d_bulk <= val_far <= bulk[32] + d_bulk


@pytest.mark.parametrize('name', BASELINES)
def test_parameter_budget_matches_ipage(name):
  config = _tiny_config()
  spec = {s.name: s for s in baselines.SPECS}[name]
  budget = common.param_budget(config, 2, 1)
  net, cfg = common.build(spec, config, 2, 1)
  count = common.count_params(spec, cfg, 2, 1, net.hidden)
  # The closest width: one unit more or less moves away from the budget.
  for other in (net.hidden - 1, net.hidden + 1):
    assert abs(count - budget) <= abs(
        common.count_params(spec, cfg, 2, 1, other) - budget)
  assert abs(count - budget) < 0.1 * budget


@pytest.mark.parametrize('name', BASELINES)
def test_save_load_round_trip(fitted, name, tmp_path):
  method, model = methods.get(name), fitted[name]
  path = str(tmp_path / name)
  methods.save_model(path, model)
  loaded = methods.load_model(path, name)
  assert loaded.method == name
  target = np.array([0.6], np.float32)
  a = method.solve(model, jax.random.PRNGKey(8), target, 6)
  b = method.solve(loaded, jax.random.PRNGKey(8), target, 6)
  # Parameters restored bitwise, the same compiled solve: exact.
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_array_equal(loaded.history['loss'], model.history['loss'])
  with pytest.raises(ValueError, match='holds a'):
    methods.load_model(path, 'mdn' if name != 'mdn' else 'ipage')


def test_method_sections_override_and_reject_unknown_settings():
  config = _tiny_config()
  config.mdn = ml_collections.ConfigDict({'num_components': 3,
                                          'train': {'epochs': 2}})
  spec = mdn.SPEC
  cfg = common.method_config(spec, config)
  assert cfg.num_components == 3
  assert common.section(config, cfg, 'train').epochs == 2
  assert common.section(config, cfg, 'train').batch_size == 64
  config.mdn = ml_collections.ConfigDict({'components': 3})
  with pytest.raises(ValueError, match='unknown setting mdn.components'):
    common.method_config(spec, config)
  config.mdn = ml_collections.ConfigDict({'train': {'epoch': 2}})
  with pytest.raises(ValueError, match="unknown train setting 'epoch'"):
    common.section(config, common.method_config(spec, config), 'train')


def test_cinn_spline_settings_reach_the_network():
  config = _tiny_config()
  config.cinn = ml_collections.ConfigDict(
      {'coupling': 'spline', 'num_bins': 5, 'spline_bound': 4.0,
       'hidden': 7, 'num_blocks': 3})
  net, cfg = common.build(cinn.SPEC, config, 2, 1)
  assert (net.coupling, net.num_bins, net.spline_bound) == ('spline', 5, 4.0)
  # x of 2 columns: each block's one subnet maps [x1, y] (2) through two
  # hidden layers of 7 to the 3 K + 1 knot parameters of x2's spline.
  h, k = 7, 5
  per_block = (2 * h + h) + (h * h + h) + (h * (3 * k + 1) + 3 * k + 1)
  assert common.count_params(cinn.SPEC, cfg, 2, 1, h) == 3 * per_block


def test_bad_input_is_refused(fitted):
  x, y = _data(64)
  y[3, 0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    methods.get('mdn').fit(jax.random.PRNGKey(0), x, y, _tiny_config())
  with pytest.raises(ValueError, match='targets must have shape'):
    methods.get('cvae').solve(fitted['cvae'], jax.random.PRNGKey(0),
                              np.zeros((2, 2)), 3)
  with pytest.warns(UserWarning, match='outside the training data'):
    methods.get('cinn').solve(fitted['cinn'], jax.random.PRNGKey(0),
                              np.array([50.0]), 3)
