"""Checkpoints: orbax round trips, kept epochs, files of earlier versions."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipage_jax import checkpoint
from ipage_jax import flows
from ipage_jax import methods
from ipage_jax import pipeline


def test_round_trip_and_shape_mismatch(tmp_path):
  path = str(tmp_path / 'tree')
  checkpoint.save(path, {'w': np.arange(6.0).reshape(2, 3)}, {'note': 'x'})
  checkpoint.save(path, {'w': np.ones((2, 3))}, {'note': 'y'})  # replaces
  tree, meta = checkpoint.restore(path, {'w': np.zeros((2, 3))})
  np.testing.assert_array_equal(tree['w'], 1.0)
  assert meta == {'note': 'y'} == checkpoint.read_meta(path)
  with pytest.raises(ValueError, match='shape'):
    checkpoint.restore(path, {'w': np.zeros((3, 3))})
  with pytest.raises(ValueError, match='cannot read checkpoint'):
    checkpoint.read_meta(str(tmp_path / 'missing'))


def test_training_states_keep_the_newest(tmp_path):
  state = {'step': jnp.zeros((), jnp.int32), 'w': jnp.zeros(3)}
  for epoch in (2, 4, 6):
    checkpoint.save_training(str(tmp_path), dict(state, w=state['w'] + epoch),
                             epoch, {'loss': [1.0] * epoch}, {'run': 1})
  assert sorted(os.listdir(tmp_path)) == ['4', '6']
  restored, epoch, history = checkpoint.restore_training(
      str(tmp_path), state, {'run': 1})
  assert epoch == 6 and history == {'loss': [1.0] * 6}
  np.testing.assert_array_equal(restored['w'], 6.0)
  assert checkpoint.restore_training(str(tmp_path / 'none'), state, 1) is None


def test_legacy_training_state_is_refused(tmp_path):
  checkpoint.save_pytree(str(tmp_path / checkpoint.LEGACY_TRAINING_FILE),
                         {'w': np.zeros(3)})
  with pytest.raises(ValueError, match='earlier version'):
    checkpoint.restore_training(str(tmp_path), {'w': np.zeros(3)}, None)


def test_model_file_of_an_earlier_version_is_read(tmp_path):
  """A model.msgpack as iPage wrote it before orbax (flax msgpack, best
  parameters under 'surrogate', a config without the newer fields)."""
  config = pipeline.default_config()
  config.model.width, config.model.num_blocks, config.model.hidden = 3, 1, 8
  inn = pipeline.build_inn(config, 2, 1)
  params = inn.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
  best = jax.tree_util.tree_map(lambda a: a + 1.0, params)
  old_config = config.to_dict()
  del old_config['solve']['rank_by'], old_config['model']['layout']
  scaler = {'mean': np.zeros(2, np.float32), 'scale': np.ones(2, np.float32)}
  path = str(tmp_path / 'model.msgpack')
  checkpoint.save_pytree(
      path, {'params': {'final': params, 'surrogate': best},
             'x_scaler': scaler,
             'y_scaler': {'mean': np.zeros(1, np.float32),
                          'scale': np.ones(1, np.float32)},
             'x_range': [np.zeros(2, np.float32), np.ones(2, np.float32)],
             'y_range': [np.zeros(1, np.float32), np.ones(1, np.float32)]},
      {'method': 'ipage', 'config': old_config, 'x_dim': 2, 'y_dim': 1,
       'diverged': False, 'history': {'loss': [0.5]}})
  model = methods.load_model(path, 'inn')
  assert model.method == 'ipage' and model.num_params == flows.num_params(
      params)
  for a, b in zip(jax.tree_util.tree_leaves(model.best_params),
                  jax.tree_util.tree_leaves(best)):
    np.testing.assert_array_equal(a, b)
  assert model.config.solve.rank_by == 'surrogate'  # the default filled in
  assert model.config.model.layout == 'full'
  with pytest.raises(ValueError, match="not one that 'na' can use"):
    methods.load_model(path, 'na')
  with open(path, 'wb') as f:
    f.write(b'garbage')
  with pytest.raises(ValueError, match='checkpoint'):
    methods.load_model(path)
