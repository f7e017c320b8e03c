"""Sharded training and localization against the one-device path.

The multi-device checks run in subprocesses with fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N` must be set before jax
is imported); each compares against the unsharded result computed in the
same process, within a float32 round-off budget derived below (a first
training step, losses and Adam's moments also against float64), and
localization also against the closed-form solution set of a linear forward
model.
"""

import importlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import localization
from ipage_jax import parallel
from ipage_jax import pipeline
from ipage_jax import training

import roundoff

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS = roundoff.EPS32
U = EPS / 2
_gamma = roundoff.gamma

# Shared by the subprocesses: a linear forward model y = x A (D=3 -> M=2).
# Its solution set {x : x A = y*} is an affine line; Adam from x0 ends on it.
_COMMON = textwrap.dedent("""
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    jax.config.update('jax_numpy_rank_promotion', 'raise')
    from ipage_jax import data as data_lib
    from ipage_jax import localization, parallel, pipeline, solving, training
    from ipage_jax import model as model_lib

    A = jnp.array([[1.0, 2.0], [0.5, -1.0], [0.0, 3.0]])
    LINEAR = lambda p, x: x @ p
    Y_STAR = np.array([1.0, 2.0], np.float32)

    def maxdiff(a, b):
      return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    def mlp(p, x):
      return jnp.tanh(x @ p['w1'] + p['b1'][None, :]) @ p['w2']

    def init_mlp(key, d=3):
      k1, k2 = jax.random.split(key)
      return {'w1': 0.5 * jax.random.normal(k1, (d, 16)),
              'b1': jnp.zeros((16,)),
              'w2': 0.3 * jax.random.normal(k2, (16, 1))}

    def loss_fn(p, xb, yb, key, step):
      # Per-step noise: the batch's random numbers must not depend on how
      # the batch is split over devices.
      noise = 0.01 * jax.random.normal(key, yb.shape)
      loss = jnp.mean((mlp(p, xb) - yb - noise) ** 2)
      return loss, {'mse': loss}

    def plain_loss(p, xb, yb, key, step):
      # No noise: a float64 reference of the step needs no random draws.
      loss = jnp.mean((mlp(p, xb) - yb) ** 2)
      return loss, {'mse': loss}

    def val_fn(p, xv, yv):
      return jnp.mean((mlp(p, xv) - yv) ** 2)

    def host(tree):
      # Exact: float32 values are float64 numbers, and JSON keeps them.
      return jax.tree_util.tree_map(
          lambda a: np.asarray(a, np.float64).tolist(), parallel.to_host(tree))

    def toy_data(n=96):
      x = jax.random.normal(jax.random.PRNGKey(0), (n, 3))
      return x, jnp.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:]
    """)

_FOUR_DEVICES = textwrap.dedent("""
    out = {'devices': jax.device_count()}
    mesh = parallel.make_mesh()

    # Localization: 10 rows (not a multiple of 4), several chunk sizes,
    # shared and per-row targets, fixed steps and early stopping.
    x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (10, 3)))
    per_row = np.asarray(
        Y_STAR[None] + jax.random.normal(jax.random.PRNGKey(1), (10, 2)))
    bounds = ([-4.0] * 3, [4.0] * 3)
    loc = localization.make_localizer(LINEAR, steps=1000, learning_rate=0.05,
                                      bounds=bounds)
    loc_tol = localization.make_localizer(LINEAR, steps=1000,
                                          learning_rate=0.05, tol=1e-4)
    runs, steps_equal, residual = [], True, 0.0
    for bounded, localizer in ((True, loc), (False, loc_tol)):
      for target in (Y_STAR, per_row):
        ref = localizer(A, x0, target)
        residual = max(residual, maxdiff(np.asarray(ref.x) @ np.asarray(A),
                                         np.broadcast_to(target, (10, 2))))
        for chunk in (0, 3):
          got = parallel.localize_sharded(localizer, A, x0, target, mesh,
                                          chunk)
          assert got.x.shape == (10, 3) and got.loss.shape == (10,)
          runs.append({'bounded': bounded, 'target': host(
              np.broadcast_to(target, (10, 2))), 'one': host(
                  ref._replace(trace=None)._asdict()), 'four': host(
                      got._replace(trace=None)._asdict())})
          steps_equal &= int(got.steps) == int(ref.steps)
    out['loc_x0'] = host(x0)
    out['loc_runs'] = runs
    out['loc_steps_equal'] = steps_equal
    out['loc_residual'] = residual
    # One compiled call on sharded rows keeps them sharded (no gather).
    xs, _ = parallel.pad_to_multiple(x0, 4)
    res = loc(parallel.replicate(A, mesh), parallel.shard_rows(xs, mesh),
              parallel.replicate(Y_STAR, mesh))
    out['loc_out_devices'] = len(res.x.sharding.device_set)
    out['loc_out_sharded'] = not res.x.sharding.is_fully_replicated

    # map_rows with an uneven row count.
    fn = jax.jit(lambda p, x: {'y': x @ p})
    got = parallel.map_rows(fn, A, x0, mesh=mesh, chunk_size=3)['y']
    out['map_maxdiff'] = maxdiff(got, x0 @ np.asarray(A))
    out['map_scale'] = float(np.max(np.abs(x0) @ np.abs(np.asarray(A))))

    # One Adam step of the noise-free loss on 16 rows, the whole data as
    # one batch (so the batch is known whatever the shuffle), unsharded and
    # sharded, against a float64 step in the test.
    x, y = toy_data()
    p0 = init_mlp(jax.random.PRNGKey(2))
    step = {'p0': host(p0), 'x': host(x[:16]), 'y': host(y[:16])}
    for name, m in (('one', None), ('four', mesh)):
      r = training.train(
          jax.random.PRNGKey(1), plain_loss, val_fn, p0, optax.adam(1e-2),
          (x[:16], y[:16]), (x[:16], y[:16]),
          training.TrainSettings(epochs=1, batch_size=16, mesh=m))
      adam = r.state.opt_state[0]
      step[name] = {'params': host(r.state.params), 'mu': host(adam.mu),
                    'nu': host(adam.nu), 'count': int(adam.count),
                    'loss': float(r.history['loss'][0]),
                    'val_loss': float(r.history['val_loss'][0])}
    out['step'] = step

    # Data-parallel training: same seed -> same loss curve and parameters.
    runs = {}
    for name, m in (('one', None), ('four', mesh)):
      settings = training.TrainSettings(epochs=4, batch_size=16, mesh=m)
      runs[name] = training.train(
          jax.random.PRNGKey(1), loss_fn, val_fn, init_mlp(
              jax.random.PRNGKey(2)), optax.adam(1e-2), (x, y), (x, y),
          settings)
    one, four = runs['one'], runs['four']
    out['train_loss_one'] = one.history['loss'].tolist()
    out['train_loss_four'] = four.history['loss'].tolist()
    out['train_val_one'] = one.history['val_loss'].tolist()
    out['train_val_four'] = four.history['val_loss'].tolist()
    out['train_params_one'] = host(one.state.params)
    out['train_params_four'] = host(four.state.params)
    out['train_data'] = host((x, y))
    w = four.state.params['w1']
    out['train_params_replicated'] = (w.sharding.is_fully_replicated and
                                      len(w.sharding.device_set) == 4)
    # XLA reduces the gradients over the devices: an all-reduce in the step.
    optimizer = optax.adam(1e-2)
    epoch = training.make_epoch(loss_fn, val_fn, optimizer, 16, 6, mesh)
    state = parallel.replicate(
        training.init_state(init_mlp(jax.random.PRNGKey(2)), optimizer), mesh)
    data = parallel.replicate((x, y), mesh)
    hlo = epoch.lower(state, jax.random.PRNGKey(0), *data,
                      *data).compile().as_text()
    out['train_all_reduce'] = 'all-reduce' in hlo
    try:
      training.train(jax.random.PRNGKey(1), loss_fn, val_fn,
                     init_mlp(jax.random.PRNGKey(2)), optax.adam(1e-2),
                     (x, y), (x, y), training.TrainSettings(
                         epochs=1, batch_size=6, mesh=mesh))
      out['batch_error'] = ''
    except ValueError as e:
      out['batch_error'] = str(e)

    # The shared phases: config.parallel in training.fit_model and in
    # solving's localization.
    cfg = pipeline.default_config()
    cfg.train.epochs, cfg.train.batch_size = 3, 16
    fits = {}
    for num in (1, 4):
      cfg.parallel.num_devices = num
      fits[num] = training.fit_model(
          jax.random.PRNGKey(3), np.asarray(x), np.asarray(y), cfg,
          method='mlp', net=None, train_cfg=cfg.train, init_fn=init_mlp,
          make_loss=lambda total: loss_fn, val_fn=val_fn, fingerprint=None)
    out['fit_loss'] = {n: fits[n].history['loss'].tolist() for n in fits}
    out['fit_params'] = {n: host(fits[n].params) for n in fits}
    # The standardized data the fits trained on (the train split's rows
    # among them).
    out['fit_data'] = host((fits[1].x_scaler.forward(x),
                            fits[1].y_scaler.forward(y)))
    out['fit_lr'] = cfg.train.learning_rate
    out['fit_params_one_device'] = len(
        fits[4].params['w1'].sharding.device_set) == 1

    def draw(key, t, n, settings):
      return jax.random.normal(key, (t.shape[0], n, 3))

    def linear(net, p, x):
      return x @ p

    identity = lambda d: data_lib.Standardizer(jnp.zeros(d), jnp.ones(d))
    solver = solving.Solver(draw=draw,
                            forward=solving.Forward(linear, 'linear', A))
    sols = {}
    for num, chunk in ((1, 0), (4, 6)):
      config = pipeline.default_config()
      config.solve.localize_steps = 200
      config.solve.localize_learning_rate = 0.05
      config.parallel.num_devices = num
      config.parallel.localize_chunk = chunk
      toy = model_lib.Model(
          method='linear', net=None, params=A, best_params=A,
          x_scaler=identity(3), y_scaler=identity(2),
          x_range=(np.full(3, -4.0, np.float32), np.full(3, 4.0, np.float32)),
          y_range=(np.full(2, -9.0, np.float32), np.full(2, 9.0, np.float32)),
          config=config, history={})
      sols[(num, chunk)] = solving.solve(
          toy, solver, jax.random.PRNGKey(4), np.stack([Y_STAR, -Y_STAR]), 7,
          solving.solve_settings(config.solve))
    out['solve'] = [host({'x': s.x, 'x0': s.x_posterior})
                    for s in sols.values()]
    out['solve_target'] = host(np.stack([Y_STAR, -Y_STAR]))
    out['solve_shape'] = list(sols[(1, 0)].x.shape)
    cfg.parallel.num_devices = 0
    out['all_devices_mesh'] = parallel.mesh_from_config(cfg.parallel).size
    print('RESULT ' + json.dumps(out))
    """)

# Before anything touches a device (hence before _COMMON).
_TWO_HOSTS_INIT = textwrap.dedent("""
    import sys
    import jax
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'localhost:{port}',
                               num_processes=2, process_id=pid)
    """)

_TWO_HOSTS = textwrap.dedent("""
    mesh = parallel.make_mesh()
    out = {'processes': jax.process_count(), 'devices': jax.device_count()}
    loc = localization.make_localizer(LINEAR, steps=300, learning_rate=0.05)
    x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (11, 3)))
    ref = loc(A, x0, Y_STAR)  # this process alone, one device
    got = parallel.localize_sharded(loc, A, x0, Y_STAR, mesh, chunk_size=4)
    out['loc'] = host({'x0': x0, 'one': ref.x, 'four': got.x})
    x, y = toy_data()
    hist = {}
    for name, m in (('one', None), ('mesh', mesh)):
      hist[name] = training.train(
          jax.random.PRNGKey(1), loss_fn, val_fn,
          init_mlp(jax.random.PRNGKey(2)), optax.adam(1e-2), (x, y), (x, y),
          training.TrainSettings(epochs=3, batch_size=16, mesh=m))
    out['train_loss'] = {n: h.history['loss'].tolist()
                         for n, h in hist.items()}
    out['train_params'] = {n: host(h.state.params) for n, h in hist.items()}
    out['train_data'] = host((x, y))
    print('RESULT ' + json.dumps(out))
    """)


def _env(num_devices):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={num_devices}')
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
      [str(ROOT)] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


def _result(proc_stdout, proc_stderr, returncode):
  assert returncode == 0, proc_stderr[-4000:]
  lines = [l for l in proc_stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, proc_stderr[-4000:]
  return json.loads(lines[-1][len('RESULT '):])


# ---------------------------------------------------------------------------
# Round-off budgets of the sharded runs (float64 references, counted
# float32 roundings).

# The subprocesses' linear model, optax.adam's defaults as float32 stores
# them, loss_fn's noise scale.
_A = np.array([[1.0, 2.0], [0.5, -1.0], [0.0, 3.0]])
_B1, _B2 = float(np.float32(0.9)), float(np.float32(0.999))
_ADAM_EPS = float(np.float32(1e-8))
_NOISE = 0.01


def _adam_step_bound(steps=100_000):
  """Adam's largest step in units of lr, max_k |m_hat_k| / sqrt(v_hat_k)
  over any gradients: by Cauchy-Schwarz |sum_j b1^(k-j) g_j| <=
  sqrt(sum_i c^i) sqrt(sum_j b2^(k-j) g_j^2), c = b1^2 / b2 (7.27)."""
  k = np.arange(1, steps + 1)
  c = _B1**2 / _B2
  return float(np.max((1 - _B1) / (1 - _B1**k) * np.sqrt(
      (1 - _B2**k) / (1 - _B2)) * np.sqrt((1 - c**k) / (1 - c))))


C_ADAM = _adam_step_bound()
# Relative round-off of a float32 gradient of the linear model's sum of
# squares, 2 (x A - t) A^T, against its terms' absolute values: 4 roundings
# in the residual (3 products and sums, the target), 3 in the product with
# A^T, 1 to spare.
RHO_LOC = 8 * EPS


def _rho_mlp(n):
  """Relative round-off of a float32 gradient of the toy MLP's batch loss,
  both runs: n for the sum over the batch, and per row 29 forward (4 in
  x w1 + b1, tanh's 2 TANH_EPS, 16 in h w2, 1 in the residual) and 11
  backward (tanh's derivative 8, the products)."""
  return 2 * _gamma(n + 29 + 11)


def _drift(steps, lr, top, rho):
  """Elementwise bound on |a - b| for two float32 runs of `steps` Adam
  steps of size <= lr that differ only by round-off, to first order (the
  feedback of an earlier difference through later gradients is left out):
  per step, Adam's normalized update m_hat / sqrt(v_hat) moves with a
  relative change rho of the gradient about 1:1 (both moments scale with
  it), lr rho; and the sums p + update, rounded to the nearest float, may
  land one more ulp apart, the float32 spacing at the largest magnitude
  `top` that the element reaches."""
  spacing = np.spacing(np.asarray(top, np.float32)).astype(np.float64)
  return steps * (lr * rho + spacing)


def _tree(d):
  return {k: np.asarray(v, np.float64) for k, v in d.items()}


def _mlp(p, x, y, noise=False, shift=None):
  """The toy MLP's mean squared error in float64 and its float32 round-off.

  Per row: a = x w1 + b1 within gamma_4 of sum |x w1| + |b1|; tanh is
  1-Lipschitz plus TANH_EPS eps of |h|; o = h w2 within gamma_16 of
  sum |h w2| plus the propagated dh; the residual o - y - noise rounds
  twice, the noise (|noise| <= 0.01 NORMAL_MAX) within NORMAL_EPS eps of
  itself and once for the scale. The mean of n squares, n + 1 roundings of
  positive terms. Without noise also the gradient (jax's backward pass: 2 r
  / n exact, tanh' as g (1 + h) (1 - h), batch sums within gamma_n) with
  the bound of each entry, and with `shift` (a tree of parameter
  differences) the most a row's r^2 moves with them, to first order.

  Returns a dict: loss, dloss (bound of the mean), rows (per-row bounds
  of r^2, for any batch's mean), g, dg (trees), moved (per row).
  """
  w1, b1, w2 = (np.asarray(p[k], np.float64) for k in ('w1', 'b1', 'w2'))
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n = len(x)
  a = x @ w1 + b1
  da = _gamma(4) * (np.abs(x) @ np.abs(w1) + np.abs(b1))
  h = np.tanh(a)
  dh = da + roundoff.TANH_EPS * EPS * (np.abs(h) + da)
  habs = np.abs(h) + dh
  o = h @ w2
  do = _gamma(16) * (habs @ np.abs(w2)) + dh @ np.abs(w2)
  nu = _NOISE * roundoff.NORMAL_MAX if noise else 0.0
  r = o - y
  rabs = np.abs(r) + nu
  dr = (do + _gamma(2) * (np.abs(o) + do + np.abs(y) + nu)
        + (roundoff.NORMAL_EPS + 1) * EPS * nu)
  rows = (2 * rabs * dr + dr**2 + _gamma(n + 1) * (rabs + dr)**2)[:, 0]
  out = {'loss': float(np.mean(r**2)), 'dloss': float(rows.mean()),
         'rows': rows}
  deriv = 1 - h**2
  if shift is not None:
    s = _tree(shift)
    out['moved'] = 2 * rabs[:, 0] * (
        np.abs(h) @ s['w2'][:, 0] + (deriv * np.abs(w2[:, 0])) @ s['b1']
        + np.einsum('bi,bj,j,ij->b', np.abs(x), deriv, np.abs(w2[:, 0]),
                    s['w1']))
  if noise:
    return out
  gr, dgr = 2 * r / n, 2 * dr / n
  grabs = np.abs(gr) + dgr
  g_w2 = h.T @ gr
  dg_w2 = dh.T @ np.abs(gr) + habs.T @ dgr + _gamma(n) * (habs.T @ grabs)
  gh = gr * w2.T
  dgh = dgr * np.abs(w2.T) + U * grabs * np.abs(w2.T)
  dderiv = 2 * np.abs(h) * dh + dh**2
  ga = gh * deriv
  # g (1 + h) (1 - h): 4 roundings, at most 7 u |g| |1 - h| (1 + 3 u).
  dga = (dgh * (deriv + dderiv) + np.abs(gh) * dderiv
         + 8 * U * (np.abs(gh) + dgh) * (1 + habs))
  gaabs = np.abs(ga) + dga
  out['g'] = {'w1': x.T @ ga, 'b1': ga.sum(0), 'w2': g_w2}
  out['dg'] = {'w1': np.abs(x).T @ dga + _gamma(n) * (np.abs(x).T @ gaabs),
               'b1': dga.sum(0) + _gamma(n) * gaabs.sum(0), 'w2': dg_w2}
  return out


def _batch(rows, size=16):
  """Bound of a float32 batch mean's round-off for any `size` rows."""
  return float(np.sort(rows)[-size:].mean())


def _param_drift(params, steps, lr, rho):
  """_drift for every parameter; each stays within steps C_ADAM lr of its
  final value (Adam's largest step), which bounds the magnitude it
  reaches."""
  return {k: _drift(steps, lr, np.abs(v) + steps * C_ADAM * lr, rho)
          for k, v in _tree(params).items()}


def _assert_params_close(a, b, drift):
  for k in drift:
    assert np.all(np.abs(np.asarray(a[k]) - np.asarray(b[k])) <= drift[k]), k


def _curve_tol(params, data, drift, losses, noise):
  """Two runs' epoch-mean batch losses (2, epochs), apart by the drift's
  first-order effect on a batch's mean r^2 (at the final parameters; the
  drift grows with the steps, epoch e of E has e / E of it), each batch
  mean's round-off (any 16 rows) and the mean of the epoch's batch losses
  (<= 6 values, gamma_5 relative each)."""
  m = _mlp(params, *data, noise=noise, shift=drift)
  share = np.arange(1, losses.shape[1] + 1) / losses.shape[1]
  return (share * _batch(m['moved']) + 2 * _batch(m['rows'])
          + _gamma(5) * np.sum(losses, 0))


def _adam64_path(x0, target, steps, lr, box=None):
  """The localizer's Adam in float64 on the linear model: optax's update
  (b1, b2, eps) on the sum of squares, plus the box penalty's subgradient
  (weight 1, box [-box, box]); `lr(count)`. Returns the (steps + 1, n, D)
  path. An early-stopped run freezes rows on a prefix of it."""
  x = np.array(x0, np.float64)
  t = np.broadcast_to(np.asarray(target, np.float64), (len(x), 2))
  m, v, path = np.zeros_like(x), np.zeros_like(x), [x]
  for k in range(1, steps + 1):
    g = 2 * (x @ _A - t) @ _A.T
    if box is not None:
      g = g + np.sign(x) * (np.abs(x) > box)
    m = _B1 * m + (1 - _B1) * g
    v = _B2 * v + (1 - _B2) * g * g
    x = x - lr(k - 1) * (m / (1 - _B1**k)) / (
        np.sqrt(v / (1 - _B2**k)) + _ADAM_EPS)
    path.append(x)
  return np.stack(path)


def _loc_drift(x0, target, steps, lr, box=None):
  """_drift of a localization: the largest magnitude of each element along
  the float64 path, doubled (room for the float32 runs' own drift)."""
  path = _adam64_path(x0, target, steps, lr, box)
  top = 2 * np.abs(path).max(0)
  return _drift(steps, max(lr(k) for k in range(steps)), top, RHO_LOC), path


def _sq_err(x, target):
  """Per row ||x A - t||^2 in float64 and its float32 round-off: each of
  the 2 residuals within gamma_4 of sum |x_i A_ij| + |t_j|, their squares
  and sum gamma_2."""
  x = np.asarray(x, np.float64)
  t = np.broadcast_to(np.asarray(target, np.float64), (len(x), 2))
  r = x @ _A - t
  e = _gamma(4) * (np.abs(x) @ np.abs(_A) + np.abs(t))
  return (np.sum(r**2, -1), np.sum(2 * np.abs(r) * e + e**2, -1)
          + _gamma(2) * np.sum((np.abs(r) + e)**2, -1))


def _box_loss(x, box=4.0):
  """Per row sum relu(|x| - box) in float64 and its float32 round-off (the
  subtraction, the 3-term sum)."""
  x = np.asarray(x, np.float64)
  return (np.sum(np.maximum(np.abs(x) - box, 0.0), -1),
          _gamma(3) * np.sum(np.abs(x) + box, -1))


@pytest.fixture(scope='module')
def four():
  """The 4-fake-device checks, run once in a subprocess."""
  proc = subprocess.run([sys.executable, '-c', _COMMON + _FOUR_DEVICES],
                        env=_env(4), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  return _result(proc.stdout, proc.stderr, proc.returncode)


def test_four_devices_seen(four):
  assert four['devices'] == 4


def test_sharded_localization_equals_unsharded(four):
  # The unsharded runs solved x A = y* (to |x A - y*| <= sqrt(tol) = 1e-2
  # with early stopping), up to the float32 residual: a 3-term dot product
  # rounds by 3 eps of sum |x_k A_kj|, <= 4 * 6 (the box |x| <= 4, A's
  # largest column sum), and the stop test on the squared residual by 2 eps
  # more.
  assert four['loc_residual'] <= 1e-2 * (1 + 2 * EPS) + 3 * EPS * 4 * 6
  x0 = np.asarray(four['loc_x0'])
  for run in four['loc_runs']:
    one, got = run['one'], run['four']
    # Rows run the same float32 operations, compiled for other row counts
    # (vector width, FMA): 1000 steps of lr 0.05 apart by the drift bound.
    drift, _ = _loc_drift(x0, run['target'], 1000, lambda k: 0.05,
                          4.0 if run['bounded'] else None)
    assert np.all(np.abs(np.subtract(got['x'], one['x'])) <= drift)
    # Each run's loss and box penalty at its own x: float64 there, within
    # the float32 round-off of evaluating them.
    for r in (one, got):
      want, tol = _sq_err(r['x'], run['target'])
      assert np.all(np.abs(np.asarray(r['loss']) - want) <= tol)
      if run['bounded']:
        want, tol = _box_loss(r['x'])
        assert np.all(np.abs(np.asarray(r['boundary']) - want) <= tol)
      else:  # no box: zeros
        assert not np.any(r['boundary'])
  # The early stop is the step where the last row's objective fell below
  # tol; equal unless a row lands within round-off of tol there.
  assert four['loc_steps_equal']
  assert four['loc_out_devices'] == 4 and four['loc_out_sharded']
  # Two float32 evaluations of the same 3-term rows, each within 3 eps of
  # sum |x_k A_kj| of the exact product.
  assert four['map_maxdiff'] <= 2 * 3 * EPS * four['map_scale']


def test_sharded_training_one_step(four):
  """One Adam step from the same state, sharded and not, against float64:
  the loss, the gradient (through Adam's moments) and the new parameters
  within the float32 round-off of computing them."""
  s = four['step']
  p0 = _tree(s['p0'])
  ref = _mlp(p0, s['x'], s['y'])
  g, dg = ref['g'], ref['dg']
  # Every gradient entry is farther from 0 than its round-off: the signs,
  # which Adam's first step follows, are certain.
  for k in g:
    assert np.all(np.abs(g[k]) > dg[k]), k
  # optax: mu = (1 - b1) g and nu = (1 - b2) g^2 with the constants stored
  # as float32 (one and two roundings); the bias corrections 1 - b^1 are
  # exact (Sterbenz); the step -lr mu_hat / (sqrt(nu_hat) + eps).
  c1, c2 = float(np.float32(1 - 0.9)), float(np.float32(1 - 0.999))
  k1, k2 = c1 / (1 - _B1), np.sqrt(c2 / (1 - _B2))
  lr = float(np.float32(1e-2))
  for name in ('one', 'four'):
    run = s[name]
    assert run['count'] == 1
    # The batch loss at p0 (epoch mean of one batch: a copy).
    assert abs(run['loss'] - ref['loss']) <= ref['dloss']
    for k in g:
      mu, nu = np.asarray(run['mu'][k]), np.asarray(run['nu'][k])
      assert np.all(np.abs(mu - c1 * g[k])
                    <= c1 * dg[k] + U * c1 * (np.abs(g[k]) + dg[k])), k
      assert np.all(np.abs(nu - c2 * g[k]**2)
                    <= c2 * (2 * np.abs(g[k]) * dg[k] + dg[k]**2)
                    + _gamma(2) * c2 * (np.abs(g[k]) + dg[k])**2), k
      # The step's ratio k1 g / (k2 |g| + eps) has slope k1 eps /
      # (k2 |g| + eps)^2 in g (the gradient's round-off enters only
      # there); its float32 evaluation rounds 8 times relative (mu and the
      # bias correction 2, sqrt(nu_hat) 2.5, + eps, the division, * lr),
      # the new parameter once more.
      ratio = k1 * g[k] / (k2 * np.abs(g[k]) + _ADAM_EPS)
      p1 = p0[k] - lr * ratio
      slope = k1 * _ADAM_EPS / (k2 * (np.abs(g[k]) - dg[k]) + _ADAM_EPS)**2
      tol = (lr * (_gamma(8) * np.abs(ratio) + slope * dg[k])
             + U * (np.abs(p1) + 2 * lr * np.abs(ratio)))
      assert np.all(np.abs(np.asarray(run['params'][k]) - p1) <= tol), k
    # The validation loss at the run's own new parameters, in float64.
    val = _mlp(run['params'], s['x'], s['y'])
    assert abs(run['val_loss'] - val['loss']) <= val['dloss']


def test_sharded_training_same_loss_curve(four):
  # 4 epochs of 6 steps (96 rows, batches of 16), lr 1e-2, sharded and not:
  # the parameters within the drift bound of 24 steps.
  steps, lr = 24, float(np.float32(1e-2))
  one, got = four['train_params_one'], four['train_params_four']
  drift = _param_drift(one, steps, lr, _rho_mlp(16))
  _assert_params_close(got, one, drift)
  # The validation losses (all 96 rows, no noise): the last at each run's
  # own parameters in float64; the curves apart by the drift's effect on
  # the mean r^2 and two evaluations' round-off.
  x, y = four['train_data']
  for name in ('one', 'four'):
    val = _mlp(four[f'train_params_{name}'], x, y)
    assert abs(four[f'train_val_{name}'][-1] - val['loss']) <= val['dloss']
  moved = _mlp(one, x, y, shift=drift)
  vals = np.array([four['train_val_one'], four['train_val_four']])
  assert np.all(np.abs(vals[1] - vals[0])
                <= moved['moved'].mean() + 2 * moved['dloss'])
  # The training loss curves (noisy batches) likewise.
  curves = np.array([four['train_loss_one'], four['train_loss_four']])
  tol = _curve_tol(one, (x, y), drift, curves, noise=True)
  assert np.all(np.abs(curves[1] - curves[0]) <= tol)
  assert four['train_loss_one'][-1] < four['train_loss_one'][0]
  assert four['train_params_replicated']
  assert four['train_all_reduce']
  assert 'does not split evenly over the 4 devices' in four['batch_error']


def test_pipeline_parallel_config(four):
  # fit_model: 3 epochs of at most 96 // 16 = 6 steps, Adam(W) at a
  # decaying lr <= learning_rate; clipping by the global norm may scale
  # the gradient, its norm over the 80 parameters within gamma_80
  # relative (a uniform scale leaves Adam's step unchanged, its round-off
  # does not).
  steps, lr = 18, float(np.float32(four['fit_lr']))
  one, got = four['fit_params']['1'], four['fit_params']['4']
  drift = _param_drift(one, steps, lr, _rho_mlp(16) + 2 * _gamma(80))
  _assert_params_close(got, one, drift)
  curves = np.array([four['fit_loss']['1'], four['fit_loss']['4']])
  tol = _curve_tol(one, four['fit_data'], drift, curves, noise=True)
  assert np.all(np.abs(curves[1] - curves[0]) <= tol)
  assert four['fit_params_one_device']
  # solve: the same draws (a copy), then 200 localization steps (cosine
  # from lr 0.05 to 1e-3, box +-4 with weight 1) apart by the drift bound.
  assert four['solve_shape'] == [2, 7, 3]
  base = four['solve'][0]
  rate = lambda k: 1e-3 + (0.05 - 1e-3) * 0.5 * (1 + np.cos(np.pi * k / 200))
  targets = np.repeat(np.asarray(four['solve_target']), 7, 0)
  drift, _ = _loc_drift(np.reshape(base['x0'], (14, 3)), targets, 200, rate,
                        4.0)
  for other in four['solve'][1:]:
    np.testing.assert_array_equal(other['x0'], base['x0'])
    diff = np.abs(np.subtract(other['x'], base['x'])).reshape(14, 3)
    assert np.all(diff <= drift)
  assert four['all_devices_mesh'] == 4


@pytest.mark.slow  # about 10 s on an idle 2-core CPU
def test_two_processes_two_devices_each():
  """jax.distributed over 2 local processes (the multi-host path)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  code = _TWO_HOSTS_INIT + _COMMON + _TWO_HOSTS
  procs = [subprocess.Popen([sys.executable, '-c', code, str(i), str(port)],
                            env=_env(2), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (stdout, stderr) in zip(procs, outs):
    got = _result(stdout, stderr, p.returncode)
    assert got['processes'] == 2 and got['devices'] == 4
    # As in the 4-device tests: 300 localization steps of lr 0.05, and 3
    # epochs of 6 training steps of lr 1e-2, apart by the drift bounds.
    loc = got['loc']
    drift, _ = _loc_drift(loc['x0'], [1.0, 2.0], 300, lambda k: 0.05)
    assert np.all(np.abs(np.subtract(loc['four'], loc['one'])) <= drift)
    one, mesh = got['train_params']['one'], got['train_params']['mesh']
    drift = _param_drift(one, 18, float(np.float32(1e-2)), _rho_mlp(16))
    _assert_params_close(mesh, one, drift)
    curves = np.array([got['train_loss']['one'], got['train_loss']['mesh']])
    tol = _curve_tol(one, got['train_data'], drift, curves, noise=True)
    assert np.all(np.abs(curves[1] - curves[0]) <= tol)


# ---------------------------------------------------------------------------
# One device (this process).


@pytest.mark.parametrize('n,multiple', [(1, 1), (5, 1), (5, 4), (8, 4),
                                        (9, 4), (3, 7)])
@pytest.mark.parametrize('kind', ['numpy', 'jax'])
def test_pad_to_multiple_and_unpad(n, multiple, kind):
  x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  xin = jnp.asarray(x) if kind == 'jax' else x
  padded, count = parallel.pad_to_multiple(xin, multiple)
  assert count == n
  size = -(-n // multiple) * multiple
  assert padded.shape == (size, 2)
  np.testing.assert_array_equal(np.asarray(padded)[:n], x)
  np.testing.assert_array_equal(np.asarray(padded)[n:],
                                np.repeat(x[-1:], size - n, 0))
  np.testing.assert_array_equal(np.asarray(parallel.unpad(padded, count)), x)


def test_pad_errors():
  with pytest.raises(ValueError, match='multiple'):
    parallel.pad_to_multiple(np.zeros((3, 2)), 0)
  with pytest.raises(ValueError, match='n >= 1'):
    parallel.pad_to_multiple(np.zeros((0, 2)), 2)
  with pytest.raises(ValueError, match='n >= 1'):
    parallel.pad_to_multiple(np.float32(1.0), 2)


def test_chunk_plan_bounds():
  for n in (1, 2, 7, 10, 64, 999, 1001):
    for chunk in (0, 1, 3, 4, 8, 100, 1000):
      for devices in (1, 2, 4):
        num, per = parallel.chunk_plan(n, chunk, devices)
        assert per % devices == 0
        assert num * per >= n > (num - 1) * per  # no empty chunk
        if chunk == 0:
          assert num == 1 and per - n < devices
        else:
          assert per <= max(chunk // devices, 1) * devices
  with pytest.raises(ValueError):
    parallel.chunk_plan(0, 4, 1)
  with pytest.raises(ValueError):
    parallel.chunk_plan(4, -1, 1)


def test_mesh_errors_and_config():
  count = jax.device_count()
  with pytest.raises(ValueError, match='only'):
    parallel.make_mesh(count + 1)
  with pytest.raises(ValueError, match='non-negative'):
    parallel.make_mesh(-1)
  assert parallel.make_mesh().size == count
  assert parallel.mesh_from_config(None) is None
  cfg = pipeline.default_config().parallel
  assert cfg.num_devices == 1 and cfg.localize_chunk == 0
  assert parallel.mesh_from_config(cfg) is None
  if count == 1:
    cfg.num_devices = 0
    assert parallel.mesh_from_config(cfg) is None
  assert training.TrainSettings(epochs=1, batch_size=1).mesh is None


@pytest.mark.parametrize('name', ['default', 'sinewave', 'robot_arm',
                                  'ballistics', 'mos2', 'architected'])
def test_task_configs_have_parallel_section(name):
  config = importlib.import_module(f'experiments.configs.{name}').get_config()
  assert config.parallel.num_devices == 1
  assert config.parallel.localize_chunk == 0


def _linear_localizer(**kw):
  a = jnp.array([[1.0, 2.0], [0.5, -1.0], [0.0, 3.0]])
  return a, localization.make_localizer(lambda p, x: x @ p, steps=100,
                                        learning_rate=0.05, **kw)


def test_chunked_localization_on_one_device():
  a, loc = _linear_localizer(trace=True)
  x0 = jax.random.normal(jax.random.PRNGKey(0), (12, 3))
  targets = jax.random.normal(jax.random.PRNGKey(1), (12, 2))
  for target in (jnp.array([1.0, 2.0]), targets):
    ref = loc(a, x0, target)
    # 100 steps of lr 0.05 in chunks compiled for other row counts: apart
    # by the drift bound (see _drift), the float64 path giving magnitudes.
    drift, path = _loc_drift(x0, target, 100, lambda k: 0.05)
    for chunk in (4, 5, 12):
      got = parallel.localize_sharded(loc, a, x0, target, None, chunk)
      assert np.all(np.abs(np.subtract(got.x, ref.x)) <= drift)
      # Each loss at its run's own x: float64 there, within the round-off.
      for r in (ref, got):
        want, tol = _sq_err(r.x, target)
        assert np.all(np.abs(np.asarray(r.loss, np.float64) - want) <= tol)
      assert int(got.steps) == 100
      if chunk != 5:  # chunks of 4 or 12 rows need no padding
        # The mean loss per step: at iterates apart by at most the drift
        # (d = |A|^T drift moves a residual r by <= d, r^2 by (2 |r| + d)
        # d; r from the float64 path, which each run stays within the
        # drift of), and each trace's round-off: the rows' losses and a
        # mean of <= 12 (gamma_13, the float64 chunk mean cast back).
        d = drift @ np.abs(_A)
        rows = []
        for x in path[:-1]:
          r = np.abs(x @ _A - np.broadcast_to(np.asarray(target), (12, 2)))
          sq, e = _sq_err(x, target)
          moved = np.sum((2 * (r + d) + d) * d, -1)
          rows.append(np.mean(moved + 2 * e)
                      + 2 * _gamma(13) * np.mean(sq + moved))
        diff = np.abs(np.subtract(got.trace, ref.trace, dtype=np.float64))
        assert np.all(diff <= np.array(rows))


def test_localize_sharded_bad_input():
  a, loc = _linear_localizer()
  x0 = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match='NaN'):
    parallel.localize_sharded(loc, a, np.full((4, 3), np.nan), [1.0, 2.0])
  with pytest.raises(ValueError, match=r'\(n, D\)'):
    parallel.localize_sharded(loc, a, np.zeros(3), [1.0, 2.0])
  with pytest.raises(ValueError, match='y_target'):
    parallel.localize_sharded(loc, a, x0, np.zeros((5, 2)))
  with pytest.raises(ValueError, match='chunk_size'):
    parallel.localize_sharded(loc, a, x0, [1.0, 2.0], None, -1)
  with pytest.raises(ValueError, match='at least one row'):
    parallel.map_rows(lambda p, x: x, None, np.zeros((0, 2)))


def test_map_rows_on_one_device():
  x = np.arange(30, dtype=np.float32).reshape(10, 3)
  got = parallel.map_rows(lambda s, a, b: {'sum': a.sum(-1) * s, 'b': b},
                          2.0, x, x[:, :1], chunk_size=4)
  # Small integers: every sum and product is exact in float32.
  np.testing.assert_array_equal(got['sum'], 2.0 * x.sum(-1))
  np.testing.assert_array_equal(got['b'], x[:, :1])
  with pytest.raises(ValueError, match='disagree'):
    parallel.map_rows(lambda s, a, b: a, None, x, x[:5])
