"""Runs every notebook in experiments/notebooks top to bottom, quick settings.

Each notebook executes in a fresh `python3` kernel with `IPAGE_QUICK=1`, in
a temporary working directory, with temporary files and the MoS2 oracle
cache redirected to pytest's tmp_path (nothing is written to the repository
or the user's cache). Any error in a cell fails the test. The notebooks are
stored without outputs.

The kernels run with `JAX_DISABLE_MOST_OPTIMIZATIONS=1`: with quick
settings XLA compilation dominates, and skipping its optimization passes
cuts the time of the four notebooks by a third or more (results are not
checked here, only that every cell runs).
"""

import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
NOTEBOOK_DIR = os.path.join(REPO, 'experiments', 'notebooks')
NOTEBOOKS = sorted(n for n in os.listdir(NOTEBOOK_DIR) if n.endswith('.ipynb'))
EXPECTED = ('01_sinewave_walkthrough.ipynb', '02_building_blocks.ipynb',
            '03_benchmarks.ipynb', '04_materials.ipynb')
CELL_TIMEOUT_S = 300


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def test_every_notebook_is_there():
  assert set(EXPECTED) <= set(NOTEBOOKS)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_valid_and_stored_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code, name
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None, cell.source
  # The install cell and the quick-settings switch come first.
  assert "'google.colab' in sys.modules" in code[0].source
  assert 'REPO_URL' in code[0].source
  assert "os.environ.get('IPAGE_QUICK') == '1'" in code[1].source


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_with_quick_settings(name, tmp_path, monkeypatch):
  monkeypatch.setenv('IPAGE_QUICK', '1')
  monkeypatch.delenv('IPAGE_RESULTS', raising=False)
  monkeypatch.setenv('IPAGE_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
  path = os.environ.get('PYTHONPATH', '')
  monkeypatch.setenv('PYTHONPATH', REPO + (os.pathsep + path if path else ''))
  work = tmp_path / 'work'
  work.mkdir()
  nb = _read(name)
  client = nbclient.NotebookClient(
      nb, kernel_name='python3', timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(work)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  errors = [o for c in nb.cells for o in c.get('outputs', [])
            if o.output_type == 'error']
  assert not errors
  # Quick settings never train or read the cached MoS2 oracle.
  assert not (tmp_path / 'cache').exists()
