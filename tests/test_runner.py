"""Command-line contract: flags, --help, exit codes, outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import runner
from experiments import train
from experiments.configs import sinewave as sinewave_config

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
  _, targets = runner.resolve('sinewave')
  assert targets.shape == (3, 1)
  bad = tmp_path / 'bad.npy'
  np.save(bad, np.zeros((3, 2)))
  parse(f'--target_file={bad}')
  with pytest.raises(runner.UsageError, match=r'\(T, 1\)'):
    runner.resolve('sinewave')
  parse(f'--target_file={good}', '--target=1')
  with pytest.raises(runner.UsageError, match='not both'):
    runner.resolve('sinewave')


def test_flags_are_config_fields_over_quick(parse):
  parse('--quick', '--epochs=3', '--seed=7', '--target=0.5', '--method=na',
        '--sampler=lhs', '--num_solutions=9', '--reuse_checkpoint')
  config, targets = runner.resolve('sinewave')
  quick = sinewave_config.get_config().quick
  assert config.train.epochs == 3  # the flag wins over --quick
  assert config.model.hidden == quick.model.hidden
  assert config.data_size == quick.data_size
  assert config.seed == 7 and config.solve.sampler == 'lhs'
  assert (config.run.task, config.run.method, config.run.num_solutions,
          config.run.reuse_model) == ('sinewave', 'na', 9, True)
  np.testing.assert_array_equal(targets, [0.5])
  parse()  # no flags: the config file's values
  config, _ = runner.resolve('sinewave')
  assert config.train.epochs == sinewave_config.get_config().train.epochs
  assert config.run.method == 'ipage' and not config.run.reuse_model


def _run_script(args, cwd, module='experiments.sinewave'):
  # XLA's optimization passes off: these runs check the command line's
  # contract (exit codes, files, finite metrics), not numbers, and with
  # tiny settings compilation dominates their time.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  return subprocess.run([sys.executable, '-m', module, *args],
                        cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.parametrize('task', ['sinewave', 'robot_arm', 'ballistics',
                                  'mos2', 'architected'])
def test_help_lists_the_flags_and_the_config_fields(task, tmp_path):
  proc = _run_script(['--help'], tmp_path, f'experiments.{task}')
  assert 'Try --helpfull' in proc.stdout, proc.stderr[-2000:]  # absl: rc 1
  for flag in ('workdir', 'quick', 'config', *runner.FLAG_FIELDS):
    assert (f'  --{flag}:' in proc.stdout
            or f'  --[no]{flag}:' in proc.stdout), flag
  assert 'run.method' in proc.stdout and 'train.epochs' in proc.stdout
  assert 'solve.*' in proc.stdout  # the config's sections


def test_script_exit_code_2_and_nothing_written(tmp_path):
  workdir = tmp_path / 'out'
  proc = _run_script([f'--workdir={workdir}', '--target=1,2'], tmp_path)
  assert proc.returncode == 2
  assert 'needs 1' in proc.stdout + proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize('field,value,match', [
    ('solve', {'rank_by': 'nope'}, 'rank_by'),
    ('model', {'layout': 'bogus'}, 'layout'),
    ('train', {'batch_size': 100_000}, 'too few'),  # found inside fit
    ('run', {'method': 'mdn'}, None),  # via a method section:
])
def test_late_errors_leave_nothing_written(parse, tmp_path, field, value,
                                           match):
  workdir = parse('--quick')
  config = runner.resolve_config('sinewave')
  config.data_size = 300
  config[field].update(value)
  if match is None:  # an unknown setting of the method's own section
    config.mdn = {'no_such_setting': 1}
    match = 'unknown setting mdn.no_such_setting'
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_script_end_to_end_quick(tmp_path):
  workdir = tmp_path / 'out'
  proc = _run_script([f'--workdir={workdir}', '--quick', '--epochs=2',
                      '--num_solutions=16', '--config.log_every=1',
                      '--config.data_size=1000',
                      '--config.solve.localize_steps=10'], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'ETA' in proc.stderr  # progress lines
  sols = np.load(workdir / 'solutions.npz')
  assert sols['x'].shape == (16, 2)
  assert sols['y_surrogate'].shape == (16, 1)
  np.testing.assert_allclose(sols['y_target'], [1.2])
  with open(workdir / 'metrics.json') as f:
    result = json.load(f)
  assert np.isfinite(result['resimulation_error'])
  assert np.isfinite(result['posterior_resimulation_error'])
  assert result['num_solutions'] == 16
  assert 0 <= result['modes_covered'] <= 9
  assert 0 <= result['posterior_modes_covered'] <= 9
  with open(workdir / 'config.json') as f:
    config = json.load(f)
  # Explicit --config.* overrides win over --quick's.
  assert config['data_size'] == 1000
  assert config['solve']['localize_steps'] == 10
  for name in ('config.json', 'model', 'model.json', 'sinewave_samplers.png',
               'training_curves.png'):
    assert (workdir / name).exists(), name
  assert not [p for p in os.listdir(workdir)
              if p.startswith('.tmp') or '.ckpt-' in p]
  # The calibration script on this model, as saved and with an override.
  model = workdir / 'model'
  calib = tmp_path / 'calib'
  proc = _run_script([f'--workdir={calib}', f'--model=inn={model}',
                      f'--model=inn={model} posterior_keep=0.5',
                      '--num_targets=8', '--num_samples=9', '--num_bins=3'],
                     tmp_path, 'experiments.calibration')
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(calib / 'calibration.json') as f:
    report = json.load(f)
  assert list(report['results']) == ['inn', 'inn (posterior_keep=0.5)']
  assert report['models']['inn (posterior_keep=0.5)']['overrides'] == (
      'posterior_keep=0.5')
  for r in report['results'].values():
    assert all(0 <= p <= 1 for p in r['rank_p_value'])
    assert 0 <= r['hpd_coverage_error'] <= 1
  assert (calib / 'calibration.png').exists()
  proc = _run_script([f'--workdir={tmp_path / "bad"}',
                      f'--model=inn={model} no_such=1'], tmp_path,
                     'experiments.calibration')
  assert proc.returncode == 1 and 'unknown solve setting' in proc.stderr
  assert not (tmp_path / 'bad').exists()


def test_mos2_refuses_negative_band_gap(tmp_path):
  workdir = tmp_path / 'out'
  proc = _run_script([f'--workdir={workdir}', '--target=-0.5'], tmp_path,
                     'experiments.mos2')
  assert proc.returncode == 2
  assert 'below 0' in proc.stdout
  assert not workdir.exists()


def test_augmentation_follows_the_config_and_needs_a_symmetry():
  from ipage_jax import tasks
  from ipage_jax.tasks import architected
  from experiments.configs import architected as architected_config
  config = architected_config.get_config()
  config.train.augment = True
  assert train.augmentation(tasks.get('architected'), config) is \
      architected.augment
  config.train.augment = False
  assert train.augmentation(tasks.get('architected'), config) is None
  config = sinewave_config.get_config()
  assert train.augmentation(tasks.get('sinewave'), config) is None
  config.train.augment = True
  with pytest.raises(runner.UsageError, match='no augment'):
    train.augmentation(tasks.get('sinewave'), config)
