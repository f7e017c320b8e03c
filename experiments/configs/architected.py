"""Architected materials (SPEC section 7, last column).

The paper trains 10,000 epochs on 100,000 cells; the default here is 60
epochs of a subnet width of 256 on the 20,000-cell FEM data set, chosen to
fit a 2-core CPU (there 7-13 s per forward-only epoch and 25-33 s per
bi-directional one, 20 minutes in all; width 512 took about 1.6x as long
per epoch). Raise both on an accelerator: `--config.train.epochs=10000
--config.model.hidden=512`.
"""

import ml_collections

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.num_blocks = 6
  c.model.hidden = 256             # paper: 512 (module docstring)
  c.model.activation = 'relu'
  c.train.batch_size = 1024
  c.train.epochs = 60             # paper: 10000 (module docstring)
  c.train.learning_rate = 1e-3
  c.train.final_learning_rate = 1e-5
  # MMD kernel widths grow with the dimension: pairwise distances of
  # standardized 1024-pixel cells are ~30-45, where the default widths
  # (0.2-1.3, sized for a few dimensions) give kernels of ~1e-3.
  c.train.mmd_widths = (2.0, 5.0, 10.0, 20.0, 40.0)
  # Data augmentation by the cell's symmetries (periodic shifts, rotations,
  # mirror images: `tasks.architected.augment`; y is unchanged by them).
  # Off: in a 10-epoch trial it closed the train / validation gap of L_y
  # but did not lower the validation loss (0.107 vs 0.104; docs/results.md).
  c.train.augment = False
  # Phase 3 on this task: the posterior samples are clipped to [0, 1] (the
  # densities the FEM simulates), localized by 100 Adam steps at 1e-3 and
  # the best of 10 per solution kept by the surrogate, as many candidates
  # as NA's starts. Without the clipping the surrogate ranks designs it is
  # not asked about (30 % of the pixels outside [0, 1]); without the keep-
  # best, localization only fools it (docs/results.md, phase-3 ablation).
  c.solve.clip_to_box = True
  c.solve.oversample = 10.0
  c.solve.localize_steps = 100
  c.solve.localize_learning_rate = 1e-3
  c.solve.localize_final_learning_rate = 1e-3
  # NA: 10 uniform starts per solution, 500 steps at 1e-4.
  c.na = ml_collections.ConfigDict()
  c.na.solve = ml_collections.ConfigDict()
  c.na.solve.oversample = 10.0
  c.na.solve.localize_steps = 500
  c.na.solve.localize_learning_rate = 1e-4
  c.na.solve.localize_final_learning_rate = 1e-4
  c.log_every = 5
  # FEM data cache (.npz): '' = architected_<rows>.npz next to the workdir,
  # shared by the runs there; the FEM runs only when the file is missing.
  c.data_cache = ''
  c.quick.data_size = 256          # cells simulated for a smoke test
  c.quick.train.batch_size = 64    # 230 training rows after the val split
  c.quick.train.epochs = 2
  c.quick.solve.localize_steps = 10
  return c
