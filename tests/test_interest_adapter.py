"""InterestAdapter learns from behaviour what the frozen text vectors cannot say.

The planted pattern: users belong to hidden groups, and a user's next item is
drawn from their group's items. Item vectors are random, so they carry no
group information: in the frozen space the window's items say nothing about
the next one, while a space trained on (window → next item) pairs pulls each
group's items together.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.interest_adapter import InterestAdapter

GROUPS, ITEMS, USERS, EVENTS, BATCH, DIM_IN = 4, 200, 40, 3000, 32, 16


def planted_stream(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item vectors ``[ITEMS, DIM_IN]``, and the events' users and items."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(ITEMS, DIM_IN))
    group_items = rng.permutation(ITEMS).reshape(GROUPS, -1)
    users = rng.integers(0, USERS, size=EVENTS)
    items = np.array([rng.choice(group_items[u % GROUPS]) for u in users])
    return vectors, users, items


def prequential_hr(adapter: InterestAdapter, *, k: int = 10, new_items_at: int = 0) -> float:
    """HR@k of the next item over the second half, each batch scored before it is learned.

    Items in the user's window are excluded, so the last items themselves are no hit.

    With ``new_items_at``, the last 20 items join the catalogue only at that event.
    """
    vectors, users, items = planted_stream()
    late = set(range(ITEMS - 20, ITEMS)) if new_items_at else set()
    early = [i for i in range(ITEMS) if i not in late]
    adapter.add_items(early, vectors[early])
    windows: dict[int, list[int]] = {}
    hits = []
    for start in range(0, EVENTS, BATCH):
        if late and start >= new_items_at:
            adapter.add_items(sorted(late), vectors[sorted(late)])
            late = set()
        batch = range(start, min(EVENTS, start + BATCH))
        batch_users, batch_items = users[batch], items[batch]
        if late:  # before the new items arrive, their events are not in the stream
            keep = [b for b, i in enumerate(batch_items) if i not in late]
            batch_users, batch_items = batch_users[keep], batch_items[keep]
        contexts = [list(windows.get(int(u), [])) for u in batch_users]
        if start >= EVENTS // 2:
            scores = adapter.transform_queries(contexts) @ adapter.item_matrix().T
            for b, context in enumerate(contexts):  # recent items are not recommended again
                scores[b, adapter.rows(context)] = -np.inf
            ids = np.array(sorted(adapter._rows, key=adapter._rows.__getitem__))
            top = ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
            hits += [target in row for target, row in zip(batch_items, top, strict=True)]
        adapter.learn_many(contexts, batch_items.tolist())
        for u, i in zip(batch_users, batch_items, strict=True):
            windows.setdefault(int(u), []).append(int(i))
            windows[int(u)] = windows[int(u)][-20:]
    return float(np.mean(hits))


def small(**overrides: object) -> InterestAdapter:
    params: dict = {"dim": 8, "n_negatives": 64, "residual_lr": 0.1, "lr": 1e-2, "seed": 0}
    params.update(overrides)
    return InterestAdapter(**params)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_learns_a_planted_pattern_the_frozen_space_cannot() -> None:
    frozen = prequential_hr(InterestAdapter(dim=None, residual=False))
    learned = prequential_hr(small())
    chance_in_group = 10 / (ITEMS / GROUPS)  # a model that knows the group: 0.2
    assert frozen < 0.08  # about chance, 10 / 180
    assert learned > 0.75 * chance_in_group
    assert learned > 3 * frozen


def test_deterministic_under_a_seed() -> None:
    vectors, _, items = planted_stream()
    outs = []
    for _ in range(2):
        adapter = small(sequence="gru")
        adapter.add_items(range(ITEMS), vectors)
        for start in range(0, 320, BATCH):
            contexts = [
                [int(i) for i in items[max(0, p - 5) : p]] for p in range(start, start + BATCH)
            ]
            adapter.learn_many(contexts, items[start : start + BATCH].tolist())
        outs.append((adapter.item_matrix(), adapter.transform_queries([[1, 2, 3]])))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_new_items_are_placed_from_their_text_and_learned() -> None:
    vectors = np.random.default_rng(1).normal(size=(ITEMS, DIM_IN))
    adapter = small()
    adapter.add_items(range(100), vectors[:100])
    adapter.learn_many([[0, 1], [2, 3]], [4, 5])
    adapter.add_items(range(100, ITEMS), vectors[100:])  # the catalogue grows after training began
    assert adapter.n_items == ITEMS
    fresh = adapter.transform(vectors[100:])  # no residual: placed from the text alone
    np.testing.assert_allclose(adapter.item_matrix()[100:], fresh, atol=1e-6)
    adapter.learn_many([[0, 150], [160]], [170, 180])  # new items as context and target
    assert not np.allclose(adapter.item_matrix()[170], fresh[70])
    # and they still score as well as the planted pattern's late items
    assert prequential_hr(small(), new_items_at=EVENTS // 4) > 0.15


def test_linear_adapter_answers_queries_over_frozen_vectors() -> None:
    """With inner-product scoring, ``(Wᵀq)·x_j`` over frozen vectors is the adapter's score."""
    vectors = np.random.default_rng(2).normal(size=(50, DIM_IN))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    adapter = small(residual=False, cosine=False)
    adapter.add_items(range(50), vectors)
    adapter.learn_many([[0, 1], [2]], [3, 4])
    q = adapter.transform_queries([[5, 6, 7]])
    assert adapter.is_linear
    np.testing.assert_allclose(
        adapter.frozen_queries(q) @ vectors.T, q @ adapter.item_matrix().T, atol=1e-5
    )


def test_rejects_events_out_of_time_order() -> None:
    adapter = small()
    adapter.add_items(range(3), np.eye(3, DIM_IN))
    adapter.learn_many([[0]], [1], t=[5.0])
    with pytest.raises(ValueError, match="event-time order"):
        adapter.learn_many([[0]], [2], t=[4.0])
