"""Command-line contract: flag validation, exit codes, outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@pytest.mark.parametrize('args,match', [
    (['--target=1,2'], 'needs 1'),
    (['--target=abc'], 'comma-separated'),
    (['--target=nan'], 'NaN'),
    (['--method=nope'], 'unknown method'),
    (['--sampler=sobol'], 'unknown sampler'),
    (['--num_solutions=0'], 'num_solutions'),
    (['--epochs=0'], 'epochs'),
])
def test_bad_flags_raise_usage_errors(parse, args, match):
  workdir = parse(*args)
  with pytest.raises(runner.UsageError, match=match):
    runner.resolve('sinewave')
  assert not workdir.exists()


def test_target_file_shapes(parse, tmp_path):
  good = tmp_path / 'targets.npy'
  np.save(good, np.array([[0.5], [1.0], [1.5]]))
  parse(f'--target_file={good}')
  run = runner.resolve('sinewave')
  assert run.targets.shape == (3, 1)
  bad = tmp_path / 'bad.npy'
  np.save(bad, np.zeros((3, 2)))
  parse(f'--target_file={bad}')
  with pytest.raises(runner.UsageError, match=r'\(T, 1\)'):
    runner.resolve('sinewave')
  parse(f'--target_file={good}', '--target=1')
  with pytest.raises(runner.UsageError, match='not both'):
    runner.resolve('sinewave')


def test_overrides_and_quick(parse):
  parse('--quick', '--epochs=3', '--seed=7', '--target=0.5')
  run = runner.resolve('sinewave')
  assert run.config.train.epochs == 3
  assert run.config.model.hidden == run.config.quick.model.hidden
  assert run.config.data_size == run.config.quick.data_size
  assert run.seed == 7 and run.config.seed == 7
  np.testing.assert_array_equal(run.targets, [0.5])


def _run_script(args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.sinewave', *args],
                        cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600)


def test_script_exit_code_2_and_nothing_written(tmp_path):
  workdir = tmp_path / 'out'
  proc = _run_script([f'--workdir={workdir}', '--target=1,2'], tmp_path)
  assert proc.returncode == 2
  assert 'needs 1' in proc.stdout + proc.stderr
  assert not workdir.exists()


def test_script_end_to_end_quick(tmp_path):
  workdir = tmp_path / 'out'
  proc = _run_script([f'--workdir={workdir}', '--quick', '--epochs=2',
                      '--num_solutions=16', '--config.log_every=1',
                      '--config.data_size=1000',
                      '--config.solve.localize_steps=10'], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  sols = np.load(workdir / 'solutions.npz')
  assert sols['x'].shape == (16, 2)
  assert sols['y_surrogate'].shape == (16, 1)
  np.testing.assert_allclose(sols['y_target'], [1.2])
  with open(workdir / 'metrics.json') as f:
    result = json.load(f)
  assert np.isfinite(result['resimulation_error'])
  assert result['num_solutions'] == 16
  assert 0 <= result['modes_covered'] <= 9
  for name in ('config.json', 'model.msgpack', 'sinewave_samplers.png',
               'training_curves.png'):
    assert (workdir / name).exists(), name
  assert not [p for p in os.listdir(workdir) if p.startswith('.tmp')]


def test_mos2_refuses_negative_band_gap(tmp_path):
  workdir = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.mos2', f'--workdir={workdir}',
       '--target=-0.5'], cwd=tmp_path, env=env, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 2
  assert 'below 0' in proc.stdout
  assert not workdir.exists()


def test_augmentation_follows_the_config_and_needs_a_symmetry():
  from ipage_jax import tasks
  from ipage_jax.tasks import architected
  from experiments.configs import architected as architected_config
  from experiments.configs import sinewave as sinewave_config
  config = architected_config.get_config()
  config.train.augment = True
  assert runner.augmentation(tasks.get('architected'), config) is \
      architected.augment
  config.train.augment = False
  assert runner.augmentation(tasks.get('architected'), config) is None
  config = sinewave_config.get_config()
  assert runner.augmentation(tasks.get('sinewave'), config) is None
  config.train.augment = True
  with pytest.raises(runner.UsageError, match='no augment'):
    runner.augmentation(tasks.get('sinewave'), config)
