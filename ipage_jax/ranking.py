"""Which of the localized candidates `solve` keeps: one rule per name.

  keep = ranking.get('diversity')(candidates, num_keep)   # (T, num_keep)

Every rule maps the candidates of T targets to `num_keep` distinct indices
per target (in any order; `solve` sorts them):

  'surrogate'   the lowest surrogate error;
  'typicality'  the accepted candidates (see `Candidates`) with the smallest
                latent norm ||f_z(x)||^2 under the final INN, designs
                typical of the training data where the surrogate is
                trustworthy; then the rest by surrogate error (methods
                without an INN latent: as 'surrogate');
  'diversity'   a greedy farthest-point subset of the accepted candidates
                in standardized x, the most spread-out designs; then the
                rest by surrogate error.

A new rule is a function `(Candidates, num_keep) -> (T, num_keep) int32`
added to `RULES`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
# Candidates count as inside the box up to this fraction of its width.
BOX_MARGIN = 1e-3


class Candidates(NamedTuple):
  """The localized candidates of T targets, n per target.

  Attributes:
    x: (T, n, D) designs, standardized units.
    score: (T, n) surrogate error ||f_y(x) - y*||^2, original units; lower
      is better.
    accepted: (T, n) bool, on the surrogate's level set (error within
      `solve.accept_error`, standardized units) and inside the box.
    typicality: (T, n) latent norm, lower = more typical of the training
      data; None for a method without a latent.
    feasible: (T, n) bool, inside the task's design space (`Task.feasible`);
      `by_surrogate` puts the infeasible ones last (`accepted` already
      excludes them); None: all feasible.
  """
  x: Array
  score: Array
  accepted: Array
  typicality: Optional[Array] = None
  feasible: Optional[Array] = None


Rule = Callable[[Candidates, int], Array]


def accepted(x: Array, err_std: Array, accept_error: float, lower: Array,
             upper: Array) -> Array:
  """(n,) bool: error (n,) <= accept_error and x (n, D) inside the box.

  The box [lower, upper] (D,) counts up to `BOX_MARGIN` of its width. Far
  outside it an extrapolating surrogate can be met by a wrong design, which
  the farthest-point choice would otherwise pick first.
  """
  margin = BOX_MARGIN * (upper - lower)
  inside = jnp.all((x >= (lower - margin)[None])
                   & (x <= (upper + margin)[None]), -1)
  return (err_std <= accept_error) & inside


def by_surrogate(candidates: Candidates, num_keep: int) -> Array:
  """The `num_keep` lowest surrogate errors per target (the feasible
  candidates first, when `candidates.feasible` says which)."""
  if candidates.feasible is None:
    return jnp.argsort(candidates.score, axis=1)[:, :num_keep]
  return jnp.lexsort((candidates.score, ~candidates.feasible),
                     axis=1)[:, :num_keep]


def by_typicality(candidates: Candidates, num_keep: int) -> Array:
  """Accepted candidates by typicality first, then the rest by score."""
  if candidates.typicality is None:
    return by_surrogate(candidates, num_keep)
  ok = candidates.accepted
  secondary = jnp.where(ok, candidates.typicality, candidates.score)
  return jnp.lexsort((secondary, ~ok), axis=1)[:, :num_keep]


def by_diversity(candidates: Candidates, num_keep: int) -> Array:
  """A spread-out subset of the accepted candidates (`diverse_subset`)."""
  return jax.vmap(functools.partial(diverse_subset, num_keep=num_keep))(
      candidates.x, candidates.score, candidates.accepted)


@functools.partial(jax.jit, static_argnames='num_keep')
def diverse_subset(x: Array, score: Array, accepted: Array, num_keep: int
                   ) -> Array:
  """Greedy farthest-point choice of `num_keep` accepted candidates.

  Starts from the accepted candidate with the lowest score, then adds the
  accepted candidate farthest (Euclidean) from all chosen so far, ties
  broken by the lower score; once the accepted ones run out, the rest follow
  by score. The chosen set's minimum pairwise distance is at least half the
  best possible (Gonzalez 1985, "Clustering to minimize the maximum
  intercluster distance", Theor. Comput. Sci. 38).

  Args:
    x: (n, D) candidates.
    score: (n,) lower is better (e.g. surrogate error).
    accepted: (n,) bool, the candidates eligible for the spread-out choice.
    num_keep: how many to choose, <= n.

  Returns:
    (num_keep,) int32 distinct indices into the n candidates, in the order
    chosen.
  """
  def step(carry, _):
    taken, nearest = carry
    open_accepted = accepted & ~taken
    spread = jnp.where(open_accepted, nearest, -jnp.inf)
    farthest = open_accepted & (spread == jnp.max(spread))
    pick = jnp.where(
        jnp.any(open_accepted),
        jnp.argmin(jnp.where(farthest, score, jnp.inf)),
        jnp.argmin(jnp.where(taken, jnp.inf, score)))
    nearest = jnp.minimum(nearest, jnp.sum(jnp.square(x - x[pick][None]), -1))
    return (taken.at[pick].set(True), nearest), pick.astype(jnp.int32)

  n = x.shape[0]
  init = (jnp.zeros(n, bool), jnp.full(n, jnp.inf, x.dtype))
  _, picks = jax.lax.scan(step, init, None, length=num_keep)
  return picks


RULES: dict[str, Rule] = {
    'surrogate': by_surrogate,
    'typicality': by_typicality,
    'diversity': by_diversity,
}
NAMES = tuple(RULES)


def get(name: str) -> Rule:
  """The rule called `name` (one of `NAMES`)."""
  if name not in RULES:
    raise ValueError(f'solve.rank_by must be one of {NAMES}, got {name!r}')
  return RULES[name]


__all__ = ('BOX_MARGIN', 'Candidates', 'NAMES', 'RULES', 'accepted',
           'by_diversity', 'by_surrogate', 'by_typicality', 'diverse_subset',
           'get')
