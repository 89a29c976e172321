"""The item vector index: add, replace, delete, persist and restore, recall of the default."""

from __future__ import annotations

import numpy as np
import pytest

from models.vector_index import ItemIndex


def _unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_add_update_delete():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 200)
    index = ItemIndex(32)
    index.upsert(np.arange(200), vectors)
    assert len(index) == 200
    keys, sims = index.search(vectors[:5], k=1)
    assert keys[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(sims[:, 0], 1.0, atol=0.06)  # i8 storage: an approximate cosine
    # Replacing a vector moves the item; the key is never there twice.
    index.upsert([7], -vectors[7:8])
    assert len(index) == 200
    keys, _ = index.search(-vectors[7:8], k=1)
    assert keys[0, 0] == 7
    keys, _ = index.search(vectors[7:8], k=10)
    assert 7 not in keys[0].tolist()
    # Deleted items never come back, whatever the query.
    gone = np.arange(0, 200, 3)
    index.remove(gone)
    index.remove([1_000])  # absent keys are ignored
    assert len(index) == 200 - len(gone)
    keys, _ = index.search(vectors, k=50)
    assert not np.isin(keys, gone).any()


def test_recall_of_the_default_settings_on_clustered_vectors():
    rng = np.random.default_rng(1)
    topics = _unit(rng, 40, 64)
    vectors = topics[rng.integers(40, size=5_000)] + 0.35 * _unit(rng, 5_000, 64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex(64)  # the default precision and search depth
    index.upsert(np.arange(len(vectors)), vectors)
    queries = vectors[rng.integers(len(vectors), size=100)]
    keys, _ = index.search(queries, k=50)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :50]
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(keys, exact, strict=True)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("precision", ["f16", "i8", "f32"])
def test_persist_and_restore_redoes_only_what_changed(tmp_path, precision):
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 300)
    ids = [f"i{k}" for k in range(300)]
    recommendable = np.ones(300, bool)
    index = ItemIndex(32, precision=precision)
    index.upsert(np.arange(300), vectors)
    index.save(tmp_path, ids, vectors)

    # The next catalogue: item 5 re-encoded, item 9 deleted, two items added.
    later = np.concatenate([vectors, _unit(rng, 2)])
    later[5] = -vectors[5]
    recommendable = np.ones(302, bool)
    recommendable[9] = False
    restored = ItemIndex.restore(
        tmp_path, [*ids, "new1", "new2"], later, recommendable, precision=precision
    )
    assert restored is not None
    assert len(restored) == 301 and 9 not in restored and 301 in restored
    assert restored.search(later[[5, 300, 301]], k=1)[0][:, 0].tolist() == [5, 300, 301]

    # Keys that would mean other items, or another precision: not adopted.
    shuffled = [ids[1], ids[0], *ids[2:]]
    assert ItemIndex.restore(tmp_path, shuffled, vectors, np.ones(300, bool)) is None
    other = "f32" if precision != "f32" else "f16"
    assert ItemIndex.restore(tmp_path, ids, vectors, np.ones(300, bool), precision=other) is None
    assert ItemIndex.restore(tmp_path / "missing", ids, vectors, np.ones(300, bool)) is None
