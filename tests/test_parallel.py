"""Sharded training and localization against the one-device path.

The multi-device checks run in subprocesses with fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N` must be set before jax
is imported); each compares against the unsharded result computed in the
same process, and localization also against the closed-form solution set of
a linear forward model.
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

ROOT = pathlib.Path(__file__).resolve().parents[1]

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

    def val_fn(p, xv, yv):
      return jnp.mean((mlp(p, xv) - yv) ** 2)

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
    diffs, steps_equal, residual = [], True, 0.0
    for localizer in (loc, loc_tol):
      for target in (Y_STAR, per_row):
        ref = localizer(A, x0, target)
        residual = max(residual, maxdiff(np.asarray(ref.x) @ np.asarray(A),
                                         np.broadcast_to(target, (10, 2))))
        for chunk in (0, 3):
          got = parallel.localize_sharded(localizer, A, x0, target, mesh,
                                          chunk)
          assert got.x.shape == (10, 3) and got.loss.shape == (10,)
          diffs += [maxdiff(got.x, ref.x), maxdiff(got.loss, ref.loss),
                    maxdiff(got.boundary, ref.boundary)]
          steps_equal &= int(got.steps) == int(ref.steps)
    out['loc_maxdiff'] = max(diffs)
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

    # Data-parallel training: same seed -> same loss curve and parameters.
    x, y = toy_data()
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
    out['train_val_maxdiff'] = maxdiff(one.history['val_loss'],
                                       four.history['val_loss'])
    out['train_param_maxdiff'] = max(
        maxdiff(a, b) for a, b in zip(jax.tree_util.tree_leaves(
            one.state.params), jax.tree_util.tree_leaves(four.state.params)))
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
    out['fit_loss_maxdiff'] = maxdiff(fits[1].history['loss'],
                                      fits[4].history['loss'])
    out['fit_param_maxdiff'] = maxdiff(fits[1].params['w1'],
                                       fits[4].params['w1'])
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
    base = sols[(1, 0)]
    out['solve_maxdiff'] = max(maxdiff(s.x, base.x) for s in sols.values())
    out['solve_shape'] = list(base.x.shape)
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
    out['loc_maxdiff'] = maxdiff(got.x, ref.x)
    x, y = toy_data()
    hist = {}
    for name, m in (('one', None), ('mesh', mesh)):
      hist[name] = training.train(
          jax.random.PRNGKey(1), loss_fn, val_fn,
          init_mlp(jax.random.PRNGKey(2)), optax.adam(1e-2), (x, y), (x, y),
          training.TrainSettings(epochs=3, batch_size=16, mesh=m))
    out['train_loss_maxdiff'] = maxdiff(hist['one'].history['loss'],
                                        hist['mesh'].history['loss'])
    params = parallel.to_host(hist['mesh'].state.params)
    out['train_param_maxdiff'] = maxdiff(params['w1'],
                                         hist['one'].state.params['w1'])
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
  # Float rounding only; the unsharded runs themselves solved x A = y*
  # (to |x A - y*| <= sqrt(tol) = 1e-2 with early stopping), up to the
  # float32 residual: a 3-term dot product rounds by 3 eps of sum |x_k A_kj|,
  # <= 4 * 6 (the box |x| <= 4, A's largest column sum), and the stop test
  # on the squared residual by 2 eps more.
  eps = float(np.finfo(np.float32).eps)
  assert four['loc_maxdiff'] < 1e-5
  assert four['loc_steps_equal']
  assert four['loc_residual'] <= 1e-2 * (1 + 2 * eps) + 3 * eps * 4 * 6
  assert four['loc_out_devices'] == 4 and four['loc_out_sharded']
  # Two float32 evaluations of the same 3-term rows, each within 3 eps of
  # sum |x_k A_kj| of the exact product.
  assert four['map_maxdiff'] <= 2 * 3 * eps * four['map_scale']


def test_sharded_training_same_loss_curve(four):
  np.testing.assert_allclose(four['train_loss_four'], four['train_loss_one'],
                             rtol=1e-5)
  assert four['train_loss_one'][-1] < four['train_loss_one'][0]
  assert four['train_val_maxdiff'] < 1e-5
  assert four['train_param_maxdiff'] < 1e-5
  assert four['train_params_replicated']
  assert four['train_all_reduce']
  assert 'does not split evenly over the 4 devices' in four['batch_error']


def test_pipeline_parallel_config(four):
  assert four['fit_loss_maxdiff'] < 1e-5
  assert four['fit_param_maxdiff'] < 1e-5
  assert four['fit_params_one_device']
  assert four['solve_shape'] == [2, 7, 3]
  assert four['solve_maxdiff'] < 1e-5
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
    assert got['loc_maxdiff'] < 1e-5
    assert got['train_loss_maxdiff'] < 1e-5
    assert got['train_param_maxdiff'] < 1e-5


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
    for chunk in (4, 5, 12):
      got = parallel.localize_sharded(loc, a, x0, target, None, chunk)
      np.testing.assert_allclose(got.x, ref.x, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-4, atol=1e-8)
      assert int(got.steps) == 100
      if chunk != 5:  # chunks of 4 or 12 rows need no padding
        np.testing.assert_allclose(got.trace, ref.trace, rtol=1e-5)


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
