"""The protocols never let a recommender see an event before it is scored.

Three deliberately unusual recommenders probe the harness:

* ``LastLearnedItem`` is *leaky*: it recommends the item of the last event it
  learned for the user. If the evaluator learned an event before scoring it,
  this would score HR@k = 1; under a correct evaluator it scores 0 (users
  never repeat an item in these streams).
* ``FutureOracle`` holds the whole stream and recommends the user's next
  event that it has not learned yet: HR@k = 1 exactly when the evaluator
  scores each event right before learning it — no earlier, no later.
* ``CallSpy`` records every call; the order is checked event by event.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from models.contracts import BehaviourEvent
from models.evaluation.baselines import (
    GlobalPopularity,
    ItemTransitions,
    RecentItemsTransitions,
    RecentPopularity,
)
from models.evaluation.protocols import (
    Recommender,
    leakfree_runs,
    leave_one_out,
    prequential,
    scored_mask,
)

from . import catalogue, sequential_stream


class LastLearnedItem:
    """Leaky on purpose: the item of the last event learned for the user."""

    name = "last-learned"

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        for event in events:
            self.last[event.user_id] = event.item_id

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]:
        return [[self.last[u]] if u in self.last else [] for u in user_ids]


class FutureOracle:
    """Knows the stream: recommends the user's next event it has not learned yet."""

    name = "oracle"

    def __init__(self, stream: Sequence[BehaviourEvent]) -> None:
        self.items: dict[str, list[str]] = {}
        for event in stream:
            self.items.setdefault(event.user_id, []).append(event.item_id)
        self.learned: dict[str, int] = {}

    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        for event in events:
            self.learned[event.user_id] = self.learned.get(event.user_id, 0) + 1

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]:
        lists = []
        for user_id in user_ids:
            mine, done = self.items[user_id], self.learned.get(user_id, 0)
            lists.append([mine[done]] if done < len(mine) else [])
        return lists


class CallSpy:
    """Records the calls: ("learn", [event positions]) and ("recommend", [user ids])."""

    name = "spy"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list]] = []

    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        self.calls.append(("learn", [int(e.event_id) for e in events]))

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]:
        self.calls.append(("recommend", list(user_ids)))
        return [[] for _ in user_ids]


@pytest.fixture(scope="module")
def stream() -> list[BehaviourEvent]:
    return sequential_stream(n_users=25, n_items=80, events_per_user=14, seed=7)


def test_the_test_recommenders_satisfy_the_protocol():
    for recommender in (LastLearnedItem(), FutureOracle([]), CallSpy()):
        assert isinstance(recommender, Recommender)


@pytest.mark.parametrize(("every", "max_run"), [(1, 1), (1, 256), (3, 256), (2, 7)])
def test_a_leaky_recommender_gets_nothing_and_an_oracle_everything(stream, every, max_run):
    result = prequential(
        stream, [LastLearnedItem(), FutureOracle(stream)], k=10, every=every, max_run=max_run
    )
    assert result.n_scored == int(scored_mask(stream, every).sum()) > 50
    assert result.recommenders["last-learned"].summary.hr == 0.0
    assert result.recommenders["oracle"].summary.hr == 1.0


def test_the_leaky_recommender_would_score_under_a_train_then_test_loop(stream):
    # The same leaky recommender under the wrong order (learn, then recommend) hits
    # every time: so HR = 0 above is the evaluator's doing, not the recommender's.
    leaky = LastLearnedItem()
    hits = 0
    for event in stream:
        leaky.learn([event])
        hits += event.item_id in leaky.recommend([event.user_id], 10)[0]
    assert hits == len(stream)


@pytest.mark.parametrize(("every", "max_run"), [(1, 1), (1, 256), (4, 256), (1, 5)])
def test_every_scored_event_is_recommended_for_before_it_or_any_later_event_is_learned(
    stream, every, max_run
):
    spy = CallSpy()
    prequential(stream, [spy], k=5, every=every, max_run=max_run)
    scored = scored_mask(stream, every)
    positions_of: dict[str, list[int]] = {}
    for position, event in enumerate(stream):
        positions_of.setdefault(event.user_id, []).append(position)
    learned: set[int] = set()
    scored_at: list[int] = []
    for kind, payload in spy.calls:
        if kind == "learn":
            assert not learned & set(payload), "an event was learned twice"
            learned.update(payload)
            continue
        for user_id in payload:
            unlearned = [p for p in positions_of[user_id] if p not in learned]
            target = unlearned[0]  # the event being scored: the user's next one
            assert scored[target]
            assert all(p in learned for p in positions_of[user_id] if p < target), (
                "an earlier event of the same user was not learned before scoring"
            )
            assert max(learned, default=-1) < target, "a later event was learned first"
            if max_run == 1:
                assert learned == set(range(target)), "strict walk: exactly the past is learned"
            scored_at.append(target)
    assert learned == set(range(len(stream)))
    assert sorted(scored_at) == np.flatnonzero(scored).tolist(), "each event scored once"


def test_leakfree_runs_cover_the_stream_and_never_repeat_a_scored_user():
    events = sequential_stream(n_users=6, n_items=30, events_per_user=8, seed=3)
    scored = scored_mask(events)
    runs = list(leakfree_runs(events, scored, max_run=4))
    assert runs[0][0] == 0 and runs[-1][1] == len(events)
    assert all(end - start <= 4 for start, end in runs)
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert end == start
    for start, end in runs:
        seen: set[str] = set()
        for position in range(start, end):
            user_id = events[position].user_id
            assert not (scored[position] and user_id in seen)
            seen.add(user_id)


def test_prequential_rejects_events_out_of_time_order(stream):
    with pytest.raises(ValueError, match="event-time order"):
        prequential(list(reversed(stream)), [GlobalPopularity()])


def test_recommender_names_must_be_unique(stream):
    with pytest.raises(ValueError, match="unique"):
        prequential(stream, [GlobalPopularity(), GlobalPopularity()])


def _baselines(n_items: int) -> list:
    items = catalogue(n_items)
    return [
        GlobalPopularity(items),
        RecentPopularity(items, half_life_s=3 * 3600.0),
        ItemTransitions(items),
        RecentItemsTransitions(items),
    ]


def _strict_reference(stream, recommenders, k):
    """Test-then-train written out plainly: one event at a time."""
    ranks = {r.name: [] for r in recommenders}
    seen_users: set[str] = set()
    for event in stream:
        if event.user_id in seen_users:
            for r in recommenders:
                top = r.recommend([event.user_id], k)[0]
                ranks[r.name].append(top.index(event.item_id) if event.item_id in top else -1)
        for r in recommenders:
            r.learn([event])
        seen_users.add(event.user_id)
    return ranks


def test_the_strict_walk_equals_a_plain_test_then_train_loop(stream):
    result = prequential(stream, _baselines(80), k=10, max_run=1)
    reference = _strict_reference(stream, _baselines(80), k=10)
    for name, ranks in reference.items():
        assert result.recommenders[name].ranks.tolist() == ranks, name


def test_batched_runs_stay_close_to_the_strict_walk_for_the_baselines(stream):
    """Batching is leak-free but reads global counts up to a run stale; measure how much.

    A user's own history is never stale (see the spy test), so a model that reads only
    it would be identical; the counting baselines may differ where other users' events
    of the same run would have changed the counts.
    """
    strict = prequential(stream, _baselines(80), k=10, max_run=1)
    batched = prequential(stream, _baselines(80), k=10, max_run=256)
    assert batched.parameters["runs"] < strict.parameters["runs"]
    for name, s in strict.recommenders.items():
        b = batched.recommenders[name]
        agree = float(np.mean(s.ranks == b.ranks))
        assert agree >= 0.8, f"{name}: only {agree:.0%} of events scored the same"
        assert abs(s.summary.hr - b.summary.hr) <= 0.05, name
    # the first-order transition of the user's own last item dominates item-transitions
    assert strict.recommenders["item-transitions"].summary.hr > 0.3


def test_leave_one_out_scores_held_out_items_before_learning_them(stream):
    spy = CallSpy()
    result = leave_one_out(stream, [spy, LastLearnedItem()], k=10, batch=16)
    users = {e.user_id for e in stream}
    assert result.validation.n_scored == result.test.n_scored == len(users)
    # the leaky recommender would hit if a held-out item had been learned before scoring
    assert result.validation.recommenders["last-learned"].summary.hr == 0.0
    assert result.test.recommenders["last-learned"].summary.hr == 0.0
    last_two = {}
    for position, event in enumerate(stream):
        last_two.setdefault(event.user_id, []).append(position)
    validation = {p[-2] for p in last_two.values()}
    test = {p[-1] for p in last_two.values()}
    learned: set[int] = set()
    recommend_calls = 0
    for kind, payload in spy.calls:
        if kind == "learn":
            learned.update(payload)
        else:
            recommend_calls += 1
            assert not learned & test, "a test event was learned"
            if learned & validation:
                assert validation <= learned, "test lists are made after every validation event"
            else:
                assert learned == set(range(len(stream))) - validation - test
    assert recommend_calls == 2 * -(-len(users) // 16)


def test_leave_one_out_baselines_exclude_training_and_validation_items(stream):
    result = leave_one_out(stream, _baselines(80), k=10)
    for split in (result.validation, result.test):
        for name, r in split.recommenders.items():
            assert r.consumed_in_lists == 0, name
            assert 0.0 <= r.summary.hr <= 1.0
    assert result.test.recommenders["item-transitions"].summary.hr > 0.2
