"""Tests of the architected-materials task: cell generator, data, cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from ipage_jax import tasks
from ipage_jax.tasks import architected as arch
from ipage_jax.tasks import homogenization as hom

KEY = jax.random.PRNGKey(0)
N_PIX = arch.SIZE * arch.SIZE

EPS32 = float(np.finfo(np.float32).eps)

_simulate = jax.jit(arch.simulate)
_tensors = jax.jit(hom.effective_tensor)


def _skeel(c, dc):
  """max_i (|S| dc |S|)_ii / S_ii over the axial entries, S = c^-1 (float64):
  the first-order relative move of 1 / S_ii when c moves by <= dc."""
  s = np.abs(np.linalg.inv(np.asarray(c, np.float64)))
  return float(np.max(np.diag(s @ dc @ s)[:2] / np.diag(s)[:2]))


def _modulus_rtol(c, cells):
  """Relative error of one FEM modulus y = (E_x + E_y) / 2 of the tensor c.

  The PCG error of C is PSD (stationary energy), below hom.TOL C*, so each
  E_i = 1 / S_ii moves by <= hom.TOL relative without amplification. Float32
  round-off: the assembly, 2 (log2(cells) + 16) eps max|C| per entry (see
  test_homogenization), and the 3 x 3 LU, backward error 9 eps |C|, both
  through |S| dC |S|; 1 / S_ii and the mean one rounding each.
  """
  c = np.asarray(c, np.float64)
  assembly = 2 * (np.ceil(np.log2(cells)) + 16) * EPS32 * np.abs(c).max()
  return hom.TOL + _skeel(c, assembly + 9 * EPS32 * np.abs(c)) + 2 * EPS32


# One-sided normal tail beyond 4 standard errors: the level of the
# statistical checks below.
P_4SE = float(stats.norm.sf(4.0))


def _phi2(h, rho):
  """P(X <= h, Y <= h) of a standard bivariate normal with correlation
  rho, in closed form through Owen's T."""
  return stats.norm.cdf(h) - 2 * special.owens_t(
      h, np.sqrt((1 - rho) / (1 + rho)))


def _neighbour_agreement(porosity, rho, pattern):
  """P(two pixels of correlation rho are both solid or both void) in a
  cell thresholded at void fraction `porosity` (float64, closed form)."""
  if pattern == 'excursion':  # void below the porosity quantile u
    u = stats.norm.ppf(porosity)
    return 1 - 2 * (stats.norm.cdf(u) - _phi2(u, rho))
  # 'network': solid where |field| <= c, P(|X| <= c) = 1 - porosity.
  c = stats.norm.ppf(1 - porosity / 2)
  both = (_phi2(c, rho) - 2 * (stats.norm.cdf(c) - _phi2(c, -rho))
          + _phi2(-c, rho))
  return 1 - 2 * (1 - porosity - both)


def _lag1_correlation(ell, size=arch.SIZE):
  """Correlation of horizontal neighbours of one filtered noise field
  (the generator's Fourier gain exp(-2 pi^2 ell^2 k^2), squared for the
  covariance), without the k = 0 mode: the threshold is the cell's own
  quantile, so its mean does not count (a smaller rho: conservative)."""
  f = np.fft.fftfreq(size)
  power = np.exp(-4 * np.pi**2 * ell**2 * (f[:, None]**2 + f[None, :]**2))
  power[0, 0] = 0.0
  return float(np.sum(power * np.cos(2 * np.pi * f)[None, :]) / power.sum())


def test_cells_are_binary_with_porosity_in_range():
  cells = np.asarray(arch.generate_cells(KEY, 32))
  assert cells.shape == (32, 32, 32) and cells.dtype == np.float32
  assert set(np.unique(cells)) <= {0.0, 1.0}
  porosity = 1.0 - cells.mean(axis=(1, 2))
  # Exact pixel counts: round(p * 1024) void pixels, p in [0.25, 0.75].
  lo, hi = arch.POROSITY_RANGE
  assert porosity.min() >= lo - 0.5 / N_PIX
  assert porosity.max() <= hi + 0.5 / N_PIX
  # p uniform on [lo, hi], width w: the mean of n draws has the standard
  # error w / sqrt(12 n); within 4 of them of the centre.
  n, w = len(porosity), hi - lo
  assert abs(porosity.mean() - (lo + hi) / 2) < 4 * w / np.sqrt(12 * n)
  # No draw below lo + t w has the probability (1 - t)^n: t where that is
  # the 4-standard-error tail; the same for the top.
  t = 1 - P_4SE ** (1 / n)
  assert porosity.min() < lo + t * w + 0.5 / N_PIX
  assert porosity.max() > hi - t * w - 0.5 / N_PIX


def test_cells_are_deterministic_per_key():
  a = arch.generate_cells(KEY, 32)
  np.testing.assert_array_equal(a, arch.generate_cells(KEY, 32))
  b = arch.generate_cells(jax.random.PRNGKey(1), 32)
  assert np.mean(np.asarray(a) != np.asarray(b)) > 0.2


@pytest.mark.parametrize('pattern', arch.PATTERNS)
def test_cells_are_smooth_and_periodic(pattern):
  """Neighbours agree far more often than independent pixels would, and as
  often across the periodic boundary as inside the cell."""
  cells = np.asarray(arch.generate_cells(KEY, 32, pattern=pattern))
  n = len(cells)
  phi = 1.0 - cells.mean(axis=(1, 2))
  # Per cell (independent draws): the share of agreeing horizontal
  # neighbours inside, and across each periodic edge.
  inner = np.mean(cells[:, :, 1:] == cells[:, :, :-1], axis=(1, 2))
  wrap_x = np.mean(cells[:, :, 0] == cells[:, :, -1], axis=1)
  wrap_y = np.mean(cells[:, 0, :] == cells[:, -1, :], axis=1)
  se = lambda d: d.std(ddof=1) / np.sqrt(n)
  # Smooth: the field sums fields of widths ell >= the smallest length
  # scale, so neighbours correlate by rho >= rho(ell_min) (a weighted mean
  # of the scales' rho), and agreement rises with rho. A cell's expected
  # share is then at least the closed form at rho(ell_min) and its
  # porosity (independent pixels would give phi^2 + (1 - phi)^2, ~0.53);
  # the mean excess is checked to 4 of its standard errors (t, 31
  # degrees of freedom: P < 4e-4).
  rho = _lag1_correlation(arch.LENGTH_SCALE_RANGE[0])
  excess = inner - _neighbour_agreement(phi, rho, pattern)
  assert excess.mean() > -4 * se(excess)
  # Periodic: the field is circulant and isotropic, the threshold takes
  # every pixel alike, so a pair across an edge (either axis) has the
  # distribution of an inner pair: zero mean difference, within 4
  # standard errors.
  for wrap in (wrap_x, wrap_y):
    assert abs(np.mean(wrap - inner)) < 4 * se(wrap - inner)


def test_mirror_cells_are_symmetric():
  cells = np.asarray(arch.generate_cells(KEY, 16, mirror=True))
  np.testing.assert_array_equal(cells, cells[:, ::-1, :])
  np.testing.assert_array_equal(cells, cells[:, :, ::-1])
  porosity = 1.0 - cells.mean(axis=(1, 2))
  # Ties in groups of 4 may move up to 3 pixels to the solid side.
  assert porosity.min() >= 0.25 - 3.5 / N_PIX
  assert porosity.max() <= 0.75 + 0.5 / N_PIX


@pytest.mark.parametrize('kwargs,name', [
    (dict(n=0), 'n'),
    (dict(porosity_range=(0.8, 0.2)), 'porosity_range'),
    (dict(porosity_range=(-0.1, 0.5)), 'porosity_range'),
    (dict(length_scale_range=(3.0, 1.0)), 'length_scale_range'),
    (dict(size=1), 'size'),
    (dict(num_scales=0), 'num_scales'),
    (dict(pattern='stripes'), 'pattern'),
])
def test_generator_rejects_bad_arguments(kwargs, name):
  kwargs = {'n': 4, **kwargs}
  with pytest.raises(ValueError, match=name):
    arch.generate_cells(KEY, **kwargs)


def test_simulate_closed_forms_and_clipping():
  x = np.stack([
      np.ones(N_PIX),                    # solid: y = 1
      np.full(N_PIX, 0.5),               # uniform: y = E(0.5)
      np.full(N_PIX, 1.7),               # clipped to 1
      np.full(N_PIX, -0.3),              # clipped to 0: y = e_min
  ]).astype(np.float32)
  y = np.asarray(_simulate(jnp.asarray(x)))
  assert y.shape == (4, 1)
  e_half = hom.E_MIN + 0.5**hom.PENALTY * (1.0 - hom.E_MIN)
  # A uniform cell's C_H is <E> C0 with <E> exact and a fluctuation of
  # rounding size; y = 1 / inv(C_H)[0, 0] then carries the float32 error of a
  # 3 x 3 inversion, a few eps times the condition number of C0.
  cond = np.linalg.cond(hom.plane_stress_matrix())
  np.testing.assert_allclose(
      y[:, 0], [1.0, e_half, 1.0, hom.E_MIN],
      rtol=8 * cond * np.finfo(np.float32).eps)


def test_simulate_gradient_of_uniform_cell():
  """For a uniform cell y = E(c), so sum_i dy/dx_i = E'(c) = p c^(p-1)(1-e_min).

  At c = 1 this also checks that the [0, 1] clip keeps the full gradient.
  """
  grad = jax.jit(jax.grad(lambda v: arch.simulate(v)[0, 0]))
  c0 = hom.plane_stress_matrix()
  for c in (1.0, 0.6):
    g = np.asarray(grad(jnp.full((1, N_PIX), c, jnp.float32)))
    expected = hom.PENALTY * c ** (hom.PENALTY - 1) * (1.0 - hom.E_MIN)
    # Every pixel runs the same operations (w = 0, the pairwise mean's
    # backward pass is a broadcast of 1 / 1024, exact): equal bitwise.
    np.testing.assert_array_equal(g, g.flat[0])
    # g_i = dy/d<E> d<E>/drho_i with dy/d<E> = y(C0) = 1 (y is 1-homogeneous
    # in C = <E> C0). d<E>/drho_i: pow (2 ulps), * p, * (1 - e_min) stored
    # (2 + 1): 5 eps. dy/d<E>: the float32 LU of C (9 eps |C| backward), the
    # backward pass S^T g S^T (3 + 3 roundings) and its contraction with C0
    # (9 terms), all relative through |S| |C| |S| (Skeel), 1 / S_ii^2 (2).
    rtol = 5 * EPS32 + (9 + 6 + 9 + 2) * EPS32 * _skeel(c0, np.abs(c0))
    np.testing.assert_allclose(g.flat[0] * N_PIX, expected, rtol=rtol)


@pytest.mark.parametrize('shape', [(1023,), (4, 32, 32), (2, 1025)])
def test_simulate_rejects_bad_shapes(shape):
  with pytest.raises(ValueError, match='x must have shape'):
    arch.simulate(jnp.zeros(shape))


@pytest.fixture(scope='module')
def data32():
  calls = []
  x, y = arch.make_dataset(
      KEY, 32, batch_size=12, progress=lambda d, t: calls.append((d, t)))
  return x, y, calls


def test_make_dataset_matches_generator_and_simulator(data32):
  x, y, calls = data32
  assert x.shape == (32, N_PIX) and y.shape == (32, 1)
  assert x.dtype == np.float32 and y.dtype == np.float32
  assert calls == [(12, 32), (24, 32), (32, 32)]
  # Row i is cell i of generate_cells(key, n), whatever the batching (the
  # last batch is padded).
  np.testing.assert_array_equal(
      x, np.asarray(arch.generate_cells(KEY, 32)).reshape(32, -1))
  # y is the FEM modulus of each row, between the void and solid moduli.
  assert np.all(y > hom.E_MIN) and np.all(y < 1.0)
  tensors = np.asarray(_tensors(jnp.asarray(x[28:]).reshape(4, 32, 32)))
  y_direct = np.asarray(
      jnp.mean(hom.axial_moduli(jnp.asarray(tensors)), -1))[:, None]
  # make_dataset fuses generation and FEM in one jit, so its PCG rounds
  # differently: two solves of each cell, each within _modulus_rtol of y*.
  for got, ref, c in zip(y[28:], y_direct, tensors):
    np.testing.assert_allclose(got, ref, rtol=2 * _modulus_rtol(c, N_PIX))


def test_cache_round_trip_and_checks(tmp_path):
  path = str(tmp_path / 'cells.npz')
  x, y = arch.make_dataset(KEY, 16, batch_size=12, cache_path=path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['cells.npz']
  # Loaded, not regenerated: another key returns the stored rows.
  x2, y2 = arch.make_dataset(jax.random.PRNGKey(9), 3, cache_path=path)
  np.testing.assert_array_equal(x2, x[:3])
  np.testing.assert_array_equal(y2, y[:3])
  with pytest.raises(ValueError, match='fewer than n=20'):
    arch.make_dataset(KEY, 20, cache_path=path)
  with pytest.raises(ValueError, match='mirror'):
    arch.make_dataset(KEY, 3, cache_path=path, mirror=True)
  bad = str(tmp_path / 'bad.npz')
  arch.save_dataset(bad, np.zeros((3, 100), np.float32),
                    np.zeros((3, 1), np.float32))
  with pytest.raises(ValueError, match='expected x'):
    arch.load_dataset(bad)
  other = str(tmp_path / 'other.npz')
  np.savez(other, x=x, y=y, size=32, e_min=0.01, penalty=3.0, nu=0.3)
  with pytest.raises(ValueError, match='e_min'):
    arch.load_dataset(other)


def test_task_record_and_default_target(data32):
  task = tasks.get('architected')
  assert task.name == 'architected'
  assert (task.x_dim, task.y_dim, task.data_size) == (1024, 1, 20_000)
  np.testing.assert_array_equal(task.lower, np.zeros(1024))
  np.testing.assert_array_equal(task.upper, np.ones(1024))
  assert len(task.x_names) == 1024 and task.simulator_kind == 'exact'
  x, y, _ = data32
  np.testing.assert_array_equal(task.sample_prior(KEY, 32), x)
  lo, hi = np.quantile(y, [0.2, 0.8])
  assert lo < task.default_target[0] < hi


def test_augment_keeps_the_fem_modulus():
  """Shifted / rotated / mirrored cells: the same pixels rearranged, new
  layouts, and the FEM gives the same mean axial modulus."""
  cells = np.asarray(arch.generate_cells(jax.random.PRNGKey(7), 6, size=8))
  x = cells.reshape(6, 64)
  out = np.asarray(arch.augment(jax.random.PRNGKey(1), jnp.asarray(x)))
  assert out.shape == x.shape
  np.testing.assert_array_equal(np.sort(out, 1), np.sort(x, 1))
  assert np.mean(np.any(out != x, axis=1)) >= 0.5
  np.testing.assert_array_equal(
      out, np.asarray(arch.augment(jax.random.PRNGKey(1), jnp.asarray(x))))
  tensors = np.asarray(_tensors(jnp.asarray(cells)))
  e = np.asarray(jnp.mean(hom.axial_moduli(jnp.asarray(tensors)), -1))
  e_aug = np.asarray(hom.effective_modulus(jnp.asarray(out.reshape(6, 8, 8))))
  # Two solves of the same exact moduli (a permuted cell), each within
  # _modulus_rtol of it.
  for got, ref, c in zip(e_aug, e, tensors):
    np.testing.assert_allclose(got, ref, rtol=2 * _modulus_rtol(c, 64))
  # Every one of the 8 square symmetries and every shift is reachable.
  one = jnp.asarray(np.arange(16.0)[None].repeat(4000, 0))
  images = {tuple(r) for r in np.asarray(arch.augment(
      jax.random.PRNGKey(2), one))}
  assert len(images) == 8 * 16
  with pytest.raises(ValueError, match='square'):
    arch.augment(jax.random.PRNGKey(0), jnp.zeros((2, 10)))


def test_binarize_porosity_and_periodic_connectivity():
  x = np.zeros((4, arch.SIZE, arch.SIZE), np.float32)
  x[0, 10] = 0.9                         # one horizontal stripe: connected
  x[1, :, 0] = 0.7                       # a blob cut by the periodic edge:
  x[1, :, -1] = 0.6                      #   columns 0 and 31 touch
  x[2, 2:6, 2:6] = 1.0                   # two equal separate squares
  x[2, 20:24, 20:24] = 1.0
  x[3] = 0.49                            # all below the threshold: void
  flat = x.reshape(4, -1)
  b = arch.binarize(flat)
  assert set(np.unique(b)) <= {0.0, 1.0}
  np.testing.assert_allclose(arch.porosity(flat),
                             [1 - 32 / 1024, 1 - 64 / 1024, 1 - 32 / 1024, 1])
  np.testing.assert_allclose(arch.solid_connectivity(flat),
                             [1.0, 1.0, 0.5, 0.0])
  # Cell 1 is two columns that are neighbours only across the periodic
  # edge; shifted one column inwards they are apart: two halves.
  apart = np.roll(x[1], 1, axis=1)
  apart[:, 1] = 0.0
  apart[:, 2] = 0.7
  np.testing.assert_allclose(arch.solid_connectivity(apart.reshape(1, -1)),
                             [0.5])


def test_design_stats_of_known_cells():
  """Binary pixels, porosity and connectivity counted by hand: a solid
  stripe (connected), two separate squares (largest holds half the solid),
  a cell of 0.5 (not binary; binarized to all solid) and a checkerboard of
  single pixels (512 components of 1 pixel: share 1 / 512)."""
  x = np.zeros((4, arch.SIZE, arch.SIZE), np.float32)
  x[0, 10] = 1.0
  x[1, 2:6, 2:6] = 0.97
  x[1, 20:24, 20:24] = 0.97
  x[2] = 0.5
  ii, jj = np.indices((arch.SIZE, arch.SIZE))
  x[3] = (ii + jj) % 2
  stats = arch.design_stats(x.reshape(4, -1))
  # Cells 0, 1, 3 are within 0.05 of 0 or 1 everywhere, cell 2 nowhere.
  assert stats['binary_pixels'] == 0.75
  porosity = np.array([1 - 32 / 1024, 1 - 32 / 1024, 0.0, 0.5])
  np.testing.assert_allclose(stats['porosity_mean'], porosity.mean(),
                             rtol=1e-6)
  assert stats['porosity_min'] == 0.0
  assert stats['porosity_max'] == 1 - 32 / 1024
  # Connected (>= 95 % in one periodic component): the stripe and the all-
  # solid binarized grey cell; not the squares (50 %) or the checkerboard.
  assert stats['connected'] == 0.5
  assert tasks.get('architected').design_stats is arch.design_stats


def test_remove_islands_keeps_the_largest_periodic_component():
  """Against the scipy union-find of `solid_connectivity` (a separate
  implementation): after the repair every cell with solid is one periodic
  component, it is the original's largest (the kept share of the solid is
  that component's share), and only solid pixels were cleared."""
  x = np.zeros((3, arch.SIZE, arch.SIZE), np.float32)
  x[0, :, 0] = 0.8                      # 32 pixels, joined across the edge
  x[0, :, -1] = 0.9
  x[0, 10:13, 10:13] = 1.0              # a 9-pixel island: cleared
  x[1, 5:7, 5:7] = 1.0                  # 4 pixels against 9: cleared
  x[1, 20:23, 20:23] = 0.6
  x[2] = 0.3                            # no solid: unchanged
  hand = np.asarray(arch.remove_islands(x.reshape(3, -1))).reshape(x.shape)
  expected = x.copy()
  expected[0, 10:13, 10:13] = 0.0
  expected[1, 5:7, 5:7] = 0.0
  np.testing.assert_array_equal(hand, expected)
  # Random binary cells near the percolation threshold: many components of
  # every size, many of them wrapping around the periodic edges.
  rng = np.random.default_rng(0)
  cells = (rng.random((16, arch.X_DIM)) < 0.55).astype(np.float32)
  fixed = np.asarray(arch.remove_islands(cells))
  assert np.all((fixed == cells) | (fixed == 0.0))
  np.testing.assert_array_equal(arch.solid_connectivity(fixed), 1.0)
  np.testing.assert_array_equal(
      fixed.sum(1), np.round(arch.solid_connectivity(cells) * cells.sum(1)))
  np.testing.assert_array_equal(np.asarray(arch.remove_islands(fixed)), fixed)
  assert tasks.get('architected').repair is arch.remove_islands
  # Any square cell size (the notebook's quick 16 x 16 cells); not others.
  small = np.zeros((1, 16, 16), np.float32)
  small[0, 0] = 1.0                     # a row, joined across the edge
  small[0, 8, 8] = 1.0                  # a one-pixel island
  kept = np.asarray(arch.remove_islands(small.reshape(1, -1)))
  np.testing.assert_array_equal(kept.reshape(16, 16)[0], 1.0)
  assert kept.sum() == 16
  with pytest.raises(ValueError, match='square'):
    arch.remove_islands(np.zeros((2, 10), np.float32))


def test_porosity_range_is_the_design_space():
  x = np.zeros((4, arch.X_DIM), np.float32)
  x[0, :256] = 1.0                       # porosity 0.75: inside (edge)
  x[1, :255] = 1.0                       # 0.751: outside
  x[2, :768] = 0.5                       # 0.25 (0.5 counts as solid)
  x[3, :] = 1.0                          # 0: outside
  np.testing.assert_array_equal(np.asarray(arch.in_porosity_range(x)),
                                [True, False, True, False])
  assert tasks.get('architected').feasible is arch.in_porosity_range
