r"""One benchmark table from several benchmark workdirs.

  python -m experiments.merge_benchmarks --workdir runs/bench_arch5 \
      --sources runs/bench_arch5_s0,runs/bench_arch5_s1,runs/bench_arch5_s2

For runs made side by side (e.g. one seed per process, each in its own
workdir): reads every source's `results.json`, checks that they were made
with the same protocol settings and, per task, the same config, joins their
runs (a (task, method, seed) may occur in one source only) and writes the
workdir `experiments.benchmark` would have written for all of them:
results.json, results.md and the figures, with `runs/<task>/<method>/
seed<s>` and the cached data files of `data/` linked (relative symlinks) to
the sources'. Nothing is trained or solved again; a later benchmark run in
the merged workdir reuses the linked models as usual.
"""

import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from experiments import benchmark
from experiments import runner
from experiments import train
from ipage_jax import methods
from ipage_jax import tasks

_SOURCES = flags.DEFINE_list('sources', [], 'Benchmark workdirs to merge.')
# --workdir: the benchmark's flag (the merged workdir).
FLAGS = flags.FLAGS

# What may differ between the sources: the workdir and what was run.
_PER_SOURCE = ('workdir', 'tasks', 'methods', 'seeds')


def merge_results(sources: Sequence[str], workdir: str) -> dict:
  """The results (as in results.json) of all `sources`, for `workdir`.

  Raises:
    UsageError: a source without results, sources with other protocol
      settings or other configs of one task, or a run in two sources.
  """
  if len(sources) < 2:
    raise runner.UsageError('--sources needs at least two workdirs')
  merged, digests, seen = None, {}, {}
  for source in sources:
    results = train.read_json(os.path.join(source, 'results.json'))
    if not (isinstance(results, dict) and 'settings' in results
            and 'runs' in results):
      raise runner.UsageError(f'{source} holds no benchmark results.json')
    settings = {k: v for k, v in results['settings'].items()
                if k not in _PER_SOURCE}
    if merged is None:
      merged = {'settings': dict(settings, workdir=workdir),
                'runs': [], 'skipped': list(results.get('skipped', []))}
      first = settings
    elif settings != first:
      raise runner.UsageError(f'{source} used other protocol settings than '
                              f'{sources[0]}: {settings} vs {first}')
    for run in results['runs']:
      key = (run['task'], run['method'], run['seed'])
      if key in seen:
        raise runner.UsageError(f'{"/".join(map(str, key))} is in both '
                                f'{seen[key]} and {source}')
      digest = digests.setdefault(run['task'], run.get('config_digest'))
      if run.get('config_digest') != digest:
        raise runner.UsageError(f'{source} ran {run["task"]} with another '
                                'config than the sources before it')
      seen[key] = source
      merged['runs'].append(dict(run, source_workdir=source))
  runs = merged['runs']
  merged['settings']['tasks'] = sorted(
      {r['task'] for r in runs}, key=tasks.NAMES.index)
  merged['settings']['methods'] = sorted(
      {r['method'] for r in runs}, key=methods.NAMES.index)
  merged['settings']['seeds'] = sorted({r['seed'] for r in runs})
  return merged


def _link(target: str, link: str) -> None:
  """A relative symlink `link` -> `target` (an existing one must agree)."""
  os.makedirs(os.path.dirname(link), exist_ok=True)
  relative = os.path.relpath(target, os.path.dirname(link))
  if os.path.lexists(link):
    if os.path.realpath(link) != os.path.realpath(target):
      raise runner.UsageError(f'{link} exists and is not {target}')
    return
  os.symlink(relative, link)


def link_sources(merged: dict, workdir: str) -> None:
  """Links every run's directory and the sources' data files into
  `workdir`."""
  for run in merged['runs']:
    _link(benchmark.run_dir(run['source_workdir'], run['task'],
                            run['method'], run['seed']),
          benchmark.run_dir(workdir, run['task'], run['method'],
                            run['seed']))
  for source in dict.fromkeys(r['source_workdir'] for r in merged['runs']):
    data = os.path.join(source, 'data')
    for name in sorted(os.listdir(data)) if os.path.isdir(data) else ():
      link = os.path.join(workdir, 'data', name)
      if not os.path.lexists(link):
        _link(os.path.join(data, name), link)


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {argv[1:]}')
  try:
    if not FLAGS.workdir:
      raise runner.UsageError('--workdir is required')
    merged = merge_results(_SOURCES.value, FLAGS.workdir)
    link_sources(merged, FLAGS.workdir)
    benchmark.write_outputs(
        FLAGS.workdir, merged,
        {n: tasks.get(n) for n in merged['settings']['tasks']})
    logging.info('merged %d runs of %d workdirs into %s',
                 len(merged['runs']), len(_SOURCES.value), FLAGS.workdir)
  except ValueError as e:
    logging.error('%s', e)
    print(f'error: {e}', flush=True)
    raise SystemExit(2)


if __name__ == '__main__':
  app.run(main)
