"""Evaluation protocols: prequential (test-then-train) and leave-one-out full ranking.

Both drive any number of recommenders through the same small interface,
:class:`Recommender`, over the same events, with the same exclusions, and
score them with the same metrics (:mod:`models.evaluation.metrics`).

**Prequential** (the protocol for streams; Gama et al., 2013). Events are
walked in event-time order (ties in file order). Every event of a user who
has at least one earlier event is *scored* — the user's current top-``k``
over the whole catalogue, consumed items excluded, against the event's item
— and only then learned. ``every = N`` scores every N-th event of the stream
(positions ``0, N, 2N, …``) but learns all of them.

The walk is batched without leaking. It cuts the stream into *runs* of
consecutive events (at most ``max_run`` long) such that a scored event is
its user's first event in the run (:func:`leakfree_runs`). For each run,
every recommender is asked once for the lists of the run's scored users,
with the state before the run, and then learns the run. So:

* no event is learned before it is scored, nor is any later event;
* every earlier event of the same user *is* learned before (the run breaks
  before a scored user's second event);
* the events of *other* users earlier in the same run are learned after the
  list is made: the list is up to ``max_run - 1`` events stale about the
  crowd, never about the user. ``max_run = 1`` is the strict one-event-at-a-
  time walk. A recommender whose lists depend on the user's own history alone
  gets identical figures either way; one that reads global counts can differ
  slightly (MovieLens users rate in sessions, so runs average 1.05 events on
  ml-latest-small and 1.3 on ml-1m-partial with ``every = 1``).

**Leave-one-out full ranking** (the offline protocol of SASRec and
BERT4Rec). For each user with at least ``min_events`` events, the last event
(in stream order) is the test item and the one before it the validation
item; everything else is training. The recommenders learn all training
events in global time order; then every held-out user's list is scored
against the validation item; then all validation events are learned (in time
order) and every list is scored against the test item. As in SASRec, the
training items are excluded from the validation ranking and training plus
validation items from the test ranking; the validation item is part of the
user's history at test time. Note that a user's test event may be older than
other users' training events: leave-one-out ignores global time (the known
weakness that prequential evaluation avoids).

References
----------
J. Gama, R. Sebastião, P. P. Rodrigues. On evaluating stream learning
algorithms. Machine Learning 90(3), 2013.
W.-C. Kang, J. McAuley. Self-attentive sequential recommendation. ICDM 2018.
F. Sun et al. BERT4Rec. CIKM 2019.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from models.contracts import BehaviourEvent
from models.evaluation.metrics import (
    MetricSummary,
    RankAccumulator,
    hit_rate_per_slice,
    time_slices,
)

__all__ = [
    "EvaluationResult",
    "LeaveOneOutResult",
    "Recommender",
    "RecommenderResult",
    "leakfree_runs",
    "leave_one_out",
    "prequential",
    "scored_mask",
]


@runtime_checkable
class Recommender(Protocol):
    """What the evaluator needs from a recommender (driftrec, a baseline, a test double).

    ``learn`` takes events in stream order; ``recommend`` returns, per user,
    at most ``k`` item ids, best first, leaving out every item the user has
    consumed, and learns nothing.
    """

    name: str

    def learn(self, events: Sequence[BehaviourEvent]) -> None: ...

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]: ...


@dataclass
class RecommenderResult:
    """One recommender's figures under one protocol.

    Attributes
    ----------
    name
        The recommender's name.
    summary
        HR@k, NDCG@k, MRR@k and coverage over every scored list.
    ranks
        The target's 0-based position in each scored list (-1: not in it), in
        the order the lists were scored.
    hit_rate_per_slice
        HR@k in each time slice of :attr:`EvaluationResult.slices`.
    consumed_in_lists
        Recommended items the user had already consumed (0 for a correct recommender).
    learn_s, recommend_s
        Seconds spent in ``learn`` and in ``recommend``.
    """

    name: str
    summary: MetricSummary
    ranks: np.ndarray
    hit_rate_per_slice: list[float]
    consumed_in_lists: int
    learn_s: float
    recommend_s: float


@dataclass
class EvaluationResult:
    """The figures of every recommender under one protocol (or one leave-one-out split).

    Attributes
    ----------
    protocol
        ``prequential``, ``loo-validation`` or ``loo-test``.
    k
        List length.
    n_events
        Events in the stream.
    catalogue_size
        Items that could be recommended (the catalogue and every item of an event).
    times
        Event time of each scored list's target, in scoring order.
    slices
        ``(first ts, last ts, lists)`` of each time slice (equal numbers of lists).
    recommenders
        Each recommender's result, by name, in the order given.
    repeat_targets
        Scored targets the user had already consumed (no recommender can hit those).
    wall_s
        Seconds the whole protocol took.
    parameters
        The protocol's parameters (``every``, ``max_run``, runs, …).
    """

    protocol: str
    k: int
    n_events: int
    catalogue_size: int
    times: np.ndarray
    slices: list[tuple[float, float, int]]
    recommenders: dict[str, RecommenderResult]
    repeat_targets: int
    wall_s: float
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_scored(self) -> int:
        """Lists scored per recommender."""
        return len(self.times)


@dataclass
class LeaveOneOutResult:
    """Leave-one-out figures on the validation and on the test items."""

    validation: EvaluationResult
    test: EvaluationResult


REFERENCE = "driftrec-exact"
"""The recommender whose lists the others' are compared with, when it runs."""


class _Scorer:
    """Scores lists of every recommender and times their calls (one protocol or split)."""

    def __init__(self, recommenders: Sequence[Recommender], k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        names = [r.name for r in recommenders]
        if len(set(names)) != len(names):
            raise ValueError(f"recommender names must be unique, got {names}")
        self.recommenders = list(recommenders)
        self.k = k
        self.accumulators = {name: RankAccumulator(k) for name in names}
        self.learn_s = dict.fromkeys(names, 0.0)
        self.recommend_s = dict.fromkeys(names, 0.0)
        self.times = array("d")
        self.repeat_targets = 0
        # How much of the exact engine's top-k each other recommender's list holds.
        self.reference = REFERENCE if REFERENCE in names else None
        self.overlap = {name: [0.0, 0] for name in names if name != REFERENCE}

    def score(self, targets: Sequence[BehaviourEvent], consumed: dict[str, set[str]]) -> None:
        """Ask every recommender once for the targets' users and score against their items."""
        user_ids = [event.user_id for event in targets]
        empty: set[str] = set()
        returned: dict[str, list[list[str]]] = {}
        for recommender in self.recommenders:
            started = time.perf_counter()
            lists = returned[recommender.name] = recommender.recommend(user_ids, self.k)
            self.recommend_s[recommender.name] += time.perf_counter() - started
            if len(lists) != len(user_ids):
                raise ValueError(
                    f"{recommender.name}.recommend returned {len(lists)} lists for "
                    f"{len(user_ids)} users; expected one list per user"
                )
            accumulator = self.accumulators[recommender.name]
            for event, recommended in zip(targets, lists, strict=True):
                accumulator.add(
                    recommended,
                    target=event.item_id,
                    consumed=consumed.get(event.user_id, empty),
                )
        if self.reference is not None:
            reference = returned[self.reference]
            for name, sums in self.overlap.items():
                for ours, exact in zip(returned[name], reference, strict=True):
                    if exact:
                        sums[0] += len(set(ours) & set(exact)) / len(exact)
                        sums[1] += 1
        for event in targets:
            self.times.append(event.ts)
            if event.item_id in consumed.get(event.user_id, empty):
                self.repeat_targets += 1

    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        for recommender in self.recommenders:
            started = time.perf_counter()
            recommender.learn(events)
            self.learn_s[recommender.name] += time.perf_counter() - started

    def result(
        self,
        protocol: str,
        *,
        n_events: int,
        catalogue_size: int,
        n_slices: int,
        wall_s: float,
        parameters: dict[str, Any],
    ) -> EvaluationResult:
        times = np.array(self.times, np.float64)
        slices = time_slices(times, n_slices)
        results = {}
        for recommender in self.recommenders:
            accumulator = self.accumulators[recommender.name]
            ranks = accumulator.ranks
            results[recommender.name] = RecommenderResult(
                name=recommender.name,
                summary=accumulator.summary(catalogue_size),
                ranks=ranks,
                hit_rate_per_slice=hit_rate_per_slice(ranks, slices),
                consumed_in_lists=accumulator.consumed_in_lists,
                learn_s=self.learn_s[recommender.name],
                recommend_s=self.recommend_s[recommender.name],
            )
        if self.reference is not None:
            parameters = {
                **parameters,
                f"recall_of_{self.reference}_top_k": {
                    name: sums[0] / sums[1] for name, sums in self.overlap.items() if sums[1]
                },
            }
        return EvaluationResult(
            protocol=protocol,
            k=self.k,
            n_events=n_events,
            catalogue_size=catalogue_size,
            times=times,
            slices=[(float(times[s[0]]), float(times[s[-1]]), len(s)) for s in slices],
            recommenders=results,
            repeat_targets=self.repeat_targets,
            wall_s=wall_s,
            parameters=parameters,
        )


def _check_time_order(events: Sequence[BehaviourEvent]) -> None:
    for position in range(1, len(events)):
        if events[position].ts < events[position - 1].ts:
            raise ValueError(
                f"events must be in event-time order (ties in file order); event {position} "
                f"(ts={events[position].ts}) is earlier than event {position - 1} "
                f"(ts={events[position - 1].ts}). Sort them stably by ts first "
                "(load_dataset does)."
            )


def _catalogue_size(catalogue: Iterable[str], events: Sequence[BehaviourEvent]) -> int:
    return len(set(catalogue) | {event.item_id for event in events})


def scored_mask(events: Sequence[BehaviourEvent], every: int = 1) -> np.ndarray:
    """Which events prequential scores: position ``% every == 0``, user seen before.

    >>> def ev(user, ts):
    ...     return BehaviourEvent(user_id=user, item_id="i", event="view", ts=ts, weight=1.0)
    >>> events = [ev("a", 1), ev("b", 2), ev("a", 3), ev("b", 4), ev("a", 5)]
    >>> scored_mask(events).tolist()
    [False, False, True, True, True]
    >>> scored_mask(events, every=2).tolist()
    [False, False, True, False, True]
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    seen: set[str] = set()
    mask = np.zeros(len(events), bool)
    for position, event in enumerate(events):
        mask[position] = position % every == 0 and event.user_id in seen
        seen.add(event.user_id)
    return mask


def leakfree_runs(
    events: Sequence[BehaviourEvent], scored: Sequence[bool] | np.ndarray, max_run: int = 256
) -> Iterator[tuple[int, int]]:
    """Cut the stream into runs ``[start, end)`` that can be scored, then learned, at once.

    A run breaks before a scored event whose user already has an event in the
    run, and after ``max_run`` events, so each scored event is its user's
    first in its run: scoring with the state before the run sees all of the
    user's earlier events and none of the run's.

    >>> def ev(user, ts):
    ...     return BehaviourEvent(user_id=user, item_id="i", event="view", ts=ts, weight=1.0)
    >>> events = [ev(u, t) for t, u in enumerate("abacba")]
    >>> list(leakfree_runs(events, [True] * 6))
    [(0, 2), (2, 5), (5, 6)]
    >>> list(leakfree_runs(events, [False, False, True, False, False, False]))
    [(0, 2), (2, 6)]
    >>> list(leakfree_runs(events, [True] * 6, max_run=1))
    [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    """
    if max_run < 1:
        raise ValueError(f"max_run must be >= 1, got {max_run}")
    if len(scored) != len(events):
        raise ValueError(f"scored has {len(scored)} flags for {len(events)} events")
    start = 0
    users_in_run: set[str] = set()
    for position, event in enumerate(events):
        if position - start >= max_run or (scored[position] and event.user_id in users_in_run):
            yield start, position
            start = position
            users_in_run = set()
        users_in_run.add(event.user_id)
    if start < len(events):
        yield start, len(events)


def prequential(
    events: Sequence[BehaviourEvent],
    recommenders: Sequence[Recommender],
    *,
    k: int = 10,
    every: int = 1,
    max_run: int = 256,
    catalogue: Iterable[str] = (),
    n_slices: int = 20,
    progress: bool = False,
) -> EvaluationResult:
    """Test-then-train over an event stream; see the module docstring.

    Parameters
    ----------
    events
        The stream, in event-time order (ties in file order).
    recommenders
        The recommenders, fresh (their catalogue loaded, no events learned).
    k
        List length.
    every
        Score every ``every``-th event (by stream position); learn all.
    max_run
        Longest run scored with one ``recommend`` call per recommender
        (1: the strict one-event-at-a-time walk).
    catalogue
        Item ids of the catalogue, for coverage (the events' items are added).
    n_slices
        Time slices for HR over time.
    progress
        Show a progress bar.

    Examples
    --------
    >>> from models.evaluation.baselines import GlobalPopularity, ItemTransitions
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> stream = [ev(u, i, t) for t, (u, i) in enumerate(
    ...     [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "b")])]
    >>> result = prequential(stream, [GlobalPopularity(), ItemTransitions()], k=1)
    >>> result.n_scored, result.recommenders["item-transitions"].ranks.tolist()
    (3, [-1, 0, 0])
    >>> round(result.recommenders["popularity"].summary.hr, 3)   # b is the top after u1
    0.667
    """
    started = time.perf_counter()
    events = list(events)
    _check_time_order(events)
    scored = scored_mask(events, every)
    scorer = _Scorer(recommenders, k)
    consumed: dict[str, set[str]] = {}
    n_runs = 0
    with tqdm(
        total=len(events), desc="prequential", unit="ev", disable=not progress, mininterval=1.0
    ) as bar:
        for start, end in leakfree_runs(events, scored, max_run):
            run = events[start:end]
            targets = [events[p] for p in range(start, end) if scored[p]]
            if targets:
                scorer.score(targets, consumed)
            scorer.learn(run)
            for event in run:
                consumed.setdefault(event.user_id, set()).add(event.item_id)
            n_runs += 1
            bar.update(len(run))
    return scorer.result(
        "prequential",
        n_events=len(events),
        catalogue_size=_catalogue_size(catalogue, events),
        n_slices=n_slices,
        wall_s=time.perf_counter() - started,
        parameters={"every": every, "max_run": max_run, "runs": n_runs},
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def leave_one_out(
    events: Sequence[BehaviourEvent],
    recommenders: Sequence[Recommender],
    *,
    k: int = 10,
    batch: int = 256,
    min_events: int = 3,
    catalogue: Iterable[str] = (),
    n_slices: int = 20,
    progress: bool = False,
) -> LeaveOneOutResult:
    """Leave-one-out full ranking; see the module docstring.

    Parameters
    ----------
    events
        The stream, in event-time order (ties in file order).
    recommenders
        The recommenders, fresh (their catalogue loaded, no events learned).
    k
        List length.
    batch
        Events per ``learn`` call and users per ``recommend`` call.
    min_events
        Users with fewer events are not held out (all their events train).
    catalogue
        Item ids of the catalogue, for coverage (the events' items are added).
    n_slices
        Time slices (by the held-out event's time) for HR over time.
    progress
        Show progress bars.

    Examples
    --------
    >>> from models.evaluation.baselines import ItemTransitions
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> stream = [ev(u, i, t) for t, (u, i) in enumerate(
    ...     [("u3", "a"), ("u3", "b"),                 # too short to hold out: trains a→b
    ...      ("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u2", "c")])]
    >>> result = leave_one_out(stream, [ItemTransitions()], k=1, min_events=3)
    >>> result.validation.n_scored, result.test.n_scored
    (2, 2)
    >>> result.validation.recommenders["item-transitions"].ranks.tolist()   # a→b learned
    [0, 0]
    >>> result.test.recommenders["item-transitions"].ranks.tolist()   # b→c never trained
    [-1, -1]
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if min_events < 2:
        raise ValueError(
            f"min_events must be >= 2 (a validation and a test item), got {min_events}"
        )
    started = time.perf_counter()
    events = list(events)
    _check_time_order(events)
    positions: dict[str, list[int]] = {}
    for position, event in enumerate(events):
        positions.setdefault(event.user_id, []).append(position)
    held_out = {
        user_id: (mine[-2], mine[-1])
        for user_id, mine in positions.items()
        if len(mine) >= min_events
    }
    held_positions = {p for pair in held_out.values() for p in pair}
    training = [event for p, event in enumerate(events) if p not in held_positions]
    users = sorted(held_out, key=lambda user_id: held_out[user_id][1])
    validation_targets = [events[held_out[u][0]] for u in users]
    test_targets = [events[held_out[u][1]] for u in users]
    catalogue_size = _catalogue_size(catalogue, events)
    parameters = {"batch": batch, "min_events": min_events, "train_events": len(training)}

    validation = _Scorer(recommenders, k)
    consumed: dict[str, set[str]] = {}
    with tqdm(
        total=len(training), desc="loo: train", unit="ev", disable=not progress, mininterval=1.0
    ) as bar:
        for chunk in _chunks(training, batch):
            validation.learn(chunk)
            bar.update(len(chunk))
    for event in training:
        consumed.setdefault(event.user_id, set()).add(event.item_id)
    for chunk in _chunks(validation_targets, batch):
        validation.score(chunk, consumed)
    validation_done = time.perf_counter()

    test = _Scorer(recommenders, k)
    in_time_order = [events[held_out[u][0]] for u in sorted(users, key=lambda u: held_out[u][0])]
    for chunk in _chunks(in_time_order, batch):
        test.learn(chunk)
    for event in validation_targets:
        consumed.setdefault(event.user_id, set()).add(event.item_id)
    for chunk in _chunks(test_targets, batch):
        test.score(chunk, consumed)
    finished = time.perf_counter()

    return LeaveOneOutResult(
        validation=validation.result(
            "loo-validation",
            n_events=len(events),
            catalogue_size=catalogue_size,
            n_slices=n_slices,
            wall_s=validation_done - started,
            parameters=parameters,
        ),
        test=test.result(
            "loo-test",
            n_events=len(events),
            catalogue_size=catalogue_size,
            n_slices=n_slices,
            wall_s=finished - validation_done,
            parameters=parameters,
        ),
    )
