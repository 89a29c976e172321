"""The recommendation engine: one object that learns events and ranks items.

It holds no Kafka code. The Faust agents, the embedded runner, the evaluator
and the benchmarks all drive the same :class:`Engine` through three calls:

* :meth:`Engine.upsert_items` / :meth:`Engine.delete_item` — the catalogue;
* :meth:`Engine.learn` — a batch of behaviour events updates the users'
  windows (RocksDB), the collaborative counts, the interest vectors and the
  global clusters; one encoder call per batch at most;
* :meth:`Engine.recommend` — the current top-k of a batch of users, without
  learning anything (test-then-train evaluation calls this first);

and :meth:`Engine.process` = learn, then one recommendation per event (or per
user) in the ``driftrec.recommendations`` contract. A Kafka worker also moves
state between engines through :class:`~models.shared_state.SharedState`'s
methods (item vectors, deltas, the cluster model); nothing outside this module
assigns an engine attribute.

Within a batch a user's recommendation reflects all of that batch's events
(micro-batch semantics). Event time comes from the events; the injectable
``clock`` only stamps ``emitted_at`` and measures latency.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from models.candidates import CandidateBudget, TwoStageRanker
from models.clustering import DecayingCentroids
from models.clustering.base import Clusterer
from models.clustering.cluster_messages import PROVISIONAL_ID_START, ClusterEvent
from models.collaborative import CollaborativeCounts
from models.contracts import (
    DISMISS_EVENT,
    BehaviourEvent,
    CatalogItem,
    ClusterInfo,
    InterestEvent,
    Recommendation,
    RecommendedItem,
    trusted,
)
from models.facets import user_facets
from models.interest import interest_weights, pooled_interest, render_sequence
from models.interest_drift import DriftState
from models.item_catalog import ItemCatalog, TextEncoderLike
from models.item_rules import ItemRules
from models.ranking import BlendWeights, HybridRanker, RankedItem, RankingRequest
from models.reasons import explain
from models.settings import EngineSettings
from models.shared_state import SharedState
from models.state_store import MemoryStore, RocksDictStore, StateStore, WindowStore
from models.user_window import SeenItems, UserWindow, WindowEntry
from models.vector_index import ItemIndex

__all__ = ["Engine", "UserState", "lifecycle_event"]


def lifecycle_event(event: ClusterEvent, model_version: int) -> InterestEvent:
    """A cluster's birth, merge or retirement as an interest event."""
    return InterestEvent(
        kind=event.kind,
        ts=event.t,
        cluster=event.cluster_id,
        into=event.other_id if event.kind == "merged" else None,
        model_version=model_version,
    )


def _pack_cluster(u: UserState) -> bytes:
    def code(cluster: int | None) -> int:
        return _NO_CLUSTER if cluster is None else cluster

    d = u.drift
    return _CLUSTER_AND_DRIFT.pack(code(u.cluster), code(d.reported), code(d.pending), d.count)


def _unpack_cluster(raw: bytes | None) -> tuple[int | None, DriftState]:
    def cluster(code: int) -> int | None:
        return None if code == _NO_CLUSTER else code

    if not raw:
        return None, DriftState()
    if len(raw) == _CLUSTER_VALUE.size:  # written before drift states: the cluster counts
        return cluster(_CLUSTER_VALUE.unpack(raw)[0]), DriftState(
            cluster(_CLUSTER_VALUE.unpack(raw)[0])
        )
    now, reported, pending, count = _CLUSTER_AND_DRIFT.unpack(raw)
    return cluster(now), DriftState(cluster(reported), cluster(pending), count)


_CLUSTER_KEY = "c:"
_CLUSTER_VALUE = struct.Struct("<q")  # the cluster alone (stores written before drift states)
# The cluster, then the drift state: reported cluster, pending cluster, times in a row.
_CLUSTER_AND_DRIFT = struct.Struct("<qqqi")
_NO_CLUSTER = -1
_INDEX_CHUNK = 65_536


@dataclass(slots=True)
class UserState:
    """Everything the ranker needs about one user, derived from the window."""

    user_id: str
    window: UserWindow
    seen: SeenItems
    interest: np.ndarray | None = None
    facets: np.ndarray | None = None
    facet_importance: np.ndarray | None = None
    cluster: int | None = None
    previous_cluster: int | None = None
    cluster_similarity: float | None = None
    drift: DriftState = field(default_factory=DriftState)
    recent: list[int] = field(default_factory=list)
    # The window's item vectors and pooling weights, shared by interest and facets.
    window_vectors: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters for metrics and the benchmark's time breakdown (seconds)."""

    events: int = 0
    batches: int = 0
    recommendations: int = 0
    store_s: float = 0.0
    encoder_s: float = 0.0
    interest_s: float = 0.0
    clustering_s: float = 0.0
    collaborative_s: float = 0.0
    ranking_s: float = 0.0
    index_s: float = 0.0
    #: How the last batch was ranked ("exact" / "two-stage") and its mean candidates per user.
    ranking_mode: str = "exact"
    candidates_per_user: float = 0.0
    #: How the vector index came to be: "" (not yet), "built" or "restored", and in how long.
    index_origin: str = ""
    index_ready_s: float = 0.0
    catalogue_loaded_s: float = 0.0


class Engine(SharedState):
    """driftrec's recommendation engine.

    What it exchanges with the other engines of a deployment (item vectors,
    counts and cluster deltas, the cluster model) and its read-only views are
    the methods of :class:`~models.shared_state.SharedState`.

    Parameters
    ----------
    settings
        The typed settings object.
    encoder
        Text encoder for item texts (local transformers model, cached, or remote).
    sequence_encoder
        Encoder for rendered windows in ``sequence`` mode; defaults to ``encoder``.
        Windows are unique per event, so this one should not be a cache.
    store
        Key-value state store holding windows, seen sets and cluster ids.
    clusterer
        Global interest clusterer; ``None`` switches clustering off.
    clock
        Wall clock for ``emitted_at`` and latency only; never for event time.
    persist_index
        Save the vector index under ``data_dir`` on :meth:`close` and adopt it
        when the next engine's catalogue holds the same items.
    ships_deltas
        Keep the collaborative counts' changes for :meth:`CollaborativeCounts.pop_delta`
        (a Kafka worker ships them to the other workers); off for an engine alone.
    """

    def __init__(
        self,
        settings: EngineSettings,
        *,
        encoder: TextEncoderLike,
        store: StateStore,
        clusterer: Clusterer | None = None,
        sequence_encoder: TextEncoderLike | None = None,
        clock: Callable[[], float] = time.time,
        ships_deltas: bool = False,
        persist_index: bool = False,
    ) -> None:
        self.settings = settings
        if settings.blas_threads is not None:
            threadpool_limits(limits=settings.blas_threads, user_api="blas")
        self.encoder = encoder
        self.sequence_encoder = sequence_encoder or encoder
        self.store = store
        self.windows = WindowStore(store, seen_capacity=settings.seen_capacity)
        self.catalog = ItemCatalog(
            encoder.dim,
            ItemRules.of(settings.include_tags, settings.exclude_tags, settings.exclude_items),
        )
        self.clusterer = clusterer
        self.counts = CollaborativeCounts(
            half_life_s=settings.collab_half_life_s,
            trending_half_life_s=settings.trending_half_life_s,
            transition_window=settings.transition_window,
            transition_distance_decay=settings.transition_distance_decay,
            transition_capacity=settings.transition_capacity,
            cluster_transition_capacity=settings.cluster_transition_capacity,
            cluster_popular_capacity=settings.cluster_popular_capacity,
            trending_head=max(256, settings.candidates),
            track_deltas=ships_deltas,
        )
        self.ranker = HybridRanker(
            BlendWeights(
                content=settings.weight_content,
                facet=settings.weight_facets,
                centroid=settings.weight_centroid,
                transitions=settings.weight_transitions,
                cluster_transitions=settings.weight_cluster_transitions,
                cluster_popular=settings.weight_cluster_popularity,
                trending=settings.weight_trending,
            ),
            recency_decay=settings.score_recency_decay,
            transition_normalisation=settings.transition_normalisation,
            recent_items=settings.score_recent_items,
        )
        self.two_stage = TwoStageRanker(
            self.ranker,
            CandidateBudget.split(settings.candidates),
            user_lists=settings.candidate_cache_users,
        )
        #: The vector index two-stage ranking queries; built when first needed.
        self.index: ItemIndex | None = None
        self._index_changes = 0
        self.persist_index = persist_index
        if persist_index:
            self.catalog.reserve(ItemIndex.saved_ids(self._index_dir))
        self.clock = clock
        self.stats = EngineStats()
        #: Recent cluster lifecycle events (born / retired / merged), newest last.
        self.cluster_events: deque = deque(maxlen=10_000)
        self._interest_events: list[InterestEvent] = []
        #: Version of the cluster model recommendations are stamped with: bumped here
        #: whenever the set of clusters changes; a worker adopting the model agent's
        #: snapshot takes the snapshot's version instead.
        self.model_version = 0

    # ------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        settings: EngineSettings,
        *,
        encoder: TextEncoderLike | None = None,
        store: StateStore | None = None,
        clusterer: Clusterer | None = None,
        in_memory: bool = False,
        clock: Callable[[], float] = time.time,
        ships_deltas: bool = False,
    ) -> Engine:
        """An engine wired from settings.

        Defaults: the settings' model behind a vector cache under ``data_dir``,
        RocksDB under ``data_dir`` (memory with ``in_memory``), and the settings'
        clusterer when ``clustering`` is on. Pass ``store`` / ``clusterer`` to
        supply them (a Faust table store, a worker-role clusterer).
        """
        sequence_encoder: TextEncoderLike | None = None
        if encoder is None:
            from models.encoder_factory import make_encoder
            from models.vector_cache import CachedEncoder

            sequence_encoder = make_encoder(settings)
            cache_path = None
            if not in_memory:
                Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
                cache_path = Path(settings.data_dir) / "vector-cache"
            encoder = CachedEncoder(sequence_encoder, path=cache_path)
        assert encoder is not None
        if store is None:
            if in_memory:
                store = MemoryStore()
            else:
                Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
                store = RocksDictStore(Path(settings.data_dir) / "windows")
        if clusterer is None and settings.clustering:
            clusterer = cls.make_clusterer(settings)
        return cls(
            settings,
            encoder=encoder,
            store=store,
            clusterer=clusterer,
            sequence_encoder=sequence_encoder,
            clock=clock,
            ships_deltas=ships_deltas,
            persist_index=not in_memory,
        )

    @staticmethod
    def make_clusterer(settings: EngineSettings) -> DecayingCentroids:
        return DecayingCentroids(
            half_life_s=settings.cluster_half_life_s,
            k_max=settings.cluster_k_max,
            new_threshold=settings.cluster_new_threshold,
            merge_threshold=settings.cluster_merge_threshold,
            retire_weight=settings.cluster_retire_weight,
        )

    def close(self) -> None:
        if self.index is not None and self.persist_index:
            self.save_index()
        self.store.close()
        close = getattr(self.encoder, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------- catalogue
    def upsert_items(self, items: Iterable[CatalogItem]) -> int:
        """Add or update catalogue items; new texts are encoded in one call."""
        for item in items:
            self.catalog.upsert(item)
        return self._encode_pending()

    def delete_item(self, item_id: str) -> bool:
        return self.catalog.delete(item_id)

    def _encode_pending(self) -> int:
        started = time.perf_counter()
        n = self.catalog.encode_pending(self.encoder)
        self.stats.encoder_s += time.perf_counter() - started
        return n

    # ------------------------------------------------------------- learning
    def learn(self, events: Sequence[BehaviourEvent]) -> dict[str, UserState]:
        """Learn a batch of events (sorted here by event time); returns the users' new state."""
        if not events:
            return {}
        s = self.settings
        ordered = sorted(events, key=lambda e: e.ts)
        for event in ordered:
            if event.event != DISMISS_EVENT:
                self.catalog.reference(event.item_id, text_hint=event.item_text)
        self._encode_pending()
        self.catalog.expire(ordered[-1].ts)

        users = self._load_users(list(dict.fromkeys(e.user_id for e in ordered)))
        started = time.perf_counter()
        observations = []
        for event in ordered:
            user = users[event.user_id]
            if event.event == DISMISS_EVENT:  # hidden for this user; nothing is learned
                user.seen.add(event.item_id)
                continue
            item = self.catalog.index_of(event.item_id)
            assert item is not None
            previous = self._recent_indices(user.window, s.transition_window, before=event.ts)
            user.window.add(
                WindowEntry(event.item_id, event.ts, event.weight, event.event),
                max_len=s.window_size,
                max_age_s=s.window_max_age_s,
            )
            user.seen.add(event.item_id)
            weight = event.weight if s.collab_weighting == "event" else 1.0
            observations.append((item, previous, event.ts, weight, user.cluster))
        self.stats.collaborative_s += time.perf_counter() - started

        states = list(users.values())
        # Derived before the counts change: in sequence mode this calls the encoder, and
        # a batch it fails on (a remote encoder that is down) must leave no trace, so the
        # whole batch can be tried again without counting twice.
        self._derive(states)
        started = time.perf_counter()
        for item, previous, t, weight, cluster in observations:
            self.counts.observe(item=item, previous=previous, t=t, weight=weight, cluster=cluster)
        self.stats.collaborative_s += time.perf_counter() - started
        if self.clusterer is not None:
            self._assign_clusters(states)
            self._track_drift(states)
        started = time.perf_counter()
        self.windows.write(
            windows={u.user_id: u.window for u in states},
            seen={u.user_id: u.seen for u in states},
            extra={_CLUSTER_KEY + u.user_id: _pack_cluster(u) for u in states},
        )
        self.stats.store_s += time.perf_counter() - started
        self.stats.events += len(events)
        self.stats.batches += 1
        return users

    def _load_users(self, user_ids: list[str]) -> dict[str, UserState]:
        started = time.perf_counter()
        windows = self.windows.get_windows(user_ids)
        seen = self.windows.get_seen(user_ids)
        clusters = self.store.get_many([_CLUSTER_KEY + u for u in user_ids])
        self.stats.store_s += time.perf_counter() - started
        users: dict[str, UserState] = {}
        for user_id, window, seen_items, raw in zip(user_ids, windows, seen, clusters, strict=True):
            cluster, drift = _unpack_cluster(raw)
            users[user_id] = UserState(
                user_id, window, seen_items, cluster=cluster, previous_cluster=cluster, drift=drift
            )
        return users

    def _track_drift(self, states: Sequence[UserState]) -> None:
        """Confirmed moves between clusters become ``moved`` interest events."""
        centroid_of = getattr(self.clusterer, "centroid", None)
        confirm = self.settings.interest_event_confirm
        for u in states:
            cluster = (
                u.cluster if u.cluster is not None and u.cluster < PROVISIONAL_ID_START else None
            )
            reported = u.drift.reported
            alive = reported is None or centroid_of is None or centroid_of(reported) is not None
            move = u.drift.observe(cluster, confirm=confirm, reported_alive=alive)
            if move is not None:
                self._interest_events.append(
                    InterestEvent(
                        kind="moved",
                        ts=u.window.newest_ts,
                        user_id=u.user_id,
                        cluster=move[1],
                        previous=move[0],
                        similarity=None
                        if u.cluster_similarity is None
                        else round(u.cluster_similarity, 6),
                        items=[e.item_id for e in u.window.recent(max(3, confirm))],
                        model_version=self.model_version,
                    )
                )

    def pop_interest_events(self) -> list[InterestEvent]:
        """The interest events since the last call (users' moves; cluster births, merges and
        retirements where this engine numbers the clusters), oldest first."""
        events, self._interest_events = self._interest_events, []
        return events

    def _recent_indices(
        self, window: UserWindow, m: int, *, before: float | None = None
    ) -> list[int]:
        """Catalogue indices of the window's ``m`` newest items, newest first.

        With ``before``, only items at or before that event time count: a late
        event is a successor of what preceded it, not of what came after.
        """
        index_of = self.catalog.index_of
        out: list[int] = []
        entries = window.entries
        for entry in reversed(entries) if before is not None else window.recent(m):
            if before is not None and entry.ts > before:
                continue
            idx = index_of(entry.item_id)
            if idx is not None:
                out.append(idx)
                if len(out) == m:
                    break
        return out

    def _window_vectors(self, u: UserState) -> tuple[np.ndarray, np.ndarray]:
        """The window's item vectors ``[n, d]`` and pooling weights ``[n]`` (kept on ``u``)."""
        if u.window_vectors is not None:
            return u.window_vectors
        s = self.settings
        entries = u.window.entries
        idx = np.array([self.catalog.index_of(e.item_id) for e in entries], np.int64)
        weights = interest_weights(
            np.array([e.ts for e in entries]),
            np.array([e.weight for e in entries]),
            half_life_s=s.interest_half_life_s,
            position_decay=s.interest_position_decay,
        )
        u.window_vectors = (self.catalog.vectors[idx], weights)
        return u.window_vectors

    def _derive_facets(self, states: Sequence[UserState]) -> None:
        """Each user's interest facets (only ranking needs them)."""
        s = self.settings
        if not s.facets:
            return
        started = time.perf_counter()
        for u in states:
            if len(u.window):
                u.facets, u.facet_importance = user_facets(
                    *self._window_vectors(u), max_facets=s.facets, threshold=s.facet_threshold
                )
        self.stats.interest_s += time.perf_counter() - started

    def _derive(self, states: Sequence[UserState]) -> None:
        """Interest vectors and recent items from each user's window."""
        s = self.settings
        started = time.perf_counter()
        for u in states:
            u.recent = self._recent_indices(u.window, max(s.score_recent_items, 1))
            if len(u.window) and s.interest_mode == "pooled":
                u.interest = pooled_interest(*self._window_vectors(u)).astype(np.float32)
        self.stats.interest_s += time.perf_counter() - started
        if s.interest_mode == "sequence":
            with_window = [u for u in states if len(u.window)]
            texts = [
                render_sequence(list(u.window.entries), self._text_of_item, max_items=s.window_size)
                for u in with_window
            ]
            started = time.perf_counter()
            encoded = self.sequence_encoder.encode(texts, max_tokens=s.sequence_max_tokens)
            self.stats.encoder_s += time.perf_counter() - started
            for u, vec in zip(with_window, encoded, strict=True):
                u.interest = vec.astype(np.float32)

    def _text_of_item(self, item_id: str) -> str:
        idx = self.catalog.index_of(item_id)
        return self.catalog.text_of(idx) if idx is not None else item_id

    def _assign_clusters(self, states: Sequence[UserState]) -> None:
        assert self.clusterer is not None
        with_interest = [u for u in states if u.interest is not None]
        if not with_interest:
            return
        started = time.perf_counter()
        points = np.stack([u.interest for u in with_interest])  # type: ignore[misc]
        times = np.array([u.window.newest_ts for u in with_interest], np.float64)
        labels = self.clusterer.learn_many(points, times)
        centroid_of = getattr(self.clusterer, "centroid", None)
        for u, label, point in zip(with_interest, labels.tolist(), points, strict=True):
            u.cluster = None if label < 0 else int(label)
            centroid = None
            if centroid_of is not None and u.cluster is not None:
                centroid = centroid_of(u.cluster)
            u.cluster_similarity = float(np.dot(point, centroid)) if centroid is not None else None
        pop_events = getattr(self.clusterer, "pop_events", None)  # clusterers with a lifecycle
        changes = pop_events() if pop_events is not None else []
        if changes and getattr(self.clusterer, "role", "authority") == "authority":
            self.model_version += 1
        authority = getattr(self.clusterer, "role", "authority") == "authority"
        for event in changes:
            self.cluster_events.append(event)
            if event.kind in ("retired", "merged"):
                self.counts.forget_cluster(event.cluster_id)
            if authority:
                self._interest_events.append(lifecycle_event(event, self.model_version))
        self.stats.clustering_s += time.perf_counter() - started

    # ------------------------------------------------------------- ranking
    def recommend(self, user_ids: Sequence[str], *, k: int | None = None) -> list[list[RankedItem]]:
        """Current top-k for each user, learning nothing (for test-then-train)."""
        users = self._load_users(list(dict.fromkeys(user_ids)))
        states = list(users.values())
        self._derive(states)
        self._derive_facets(states)
        return self._rank([users[u] for u in user_ids], k or self.settings.top_k)

    def _rank(
        self, states: Sequence[UserState], k: int, *, reasons: bool = False
    ) -> list[list[RankedItem]]:
        """Each user's top k; with ``reasons``, each item's ``because`` (models/reasons.py)."""
        started = time.perf_counter()
        centroid_of = getattr(self.clusterer, "centroid", None)  # clusterers with centroids
        requests = []
        index_of = self.catalog.index_of
        for u in states:
            seen_idx = [index_of(i) for i in u.seen.items()]
            requests.append(
                RankingRequest(
                    interest=u.interest,
                    facets=u.facets,
                    facet_importance=u.facet_importance,
                    cluster=u.cluster,
                    centroid=(
                        centroid_of(u.cluster)
                        if centroid_of is not None and u.cluster is not None
                        else None
                    ),
                    recent=u.recent,
                    exclude=np.array([i for i in seen_idx if i is not None], np.int64),
                    user_id=u.user_id,
                )
            )
        mode = self.ranking_mode()
        self.stats.ranking_mode = mode
        if mode == "two-stage":
            synced = time.perf_counter()
            index = self.sync_index()
            started += time.perf_counter() - synced  # counted in index_s, not ranking_s
            ranked = self.two_stage.rank(
                requests,
                self.catalog.vectors,
                self.counts,
                index,
                k=k,
                recommendable=self.catalog.recommendable,
                index_changes=self._index_changes,
            )
            self.stats.candidates_per_user = self.two_stage.last_candidates
        else:
            ranked = self.ranker.rank(
                requests,
                self.catalog.vectors,
                self.counts,
                k=k,
                recommendable=self.catalog.recommendable,
            )
        if reasons:
            because = explain(
                requests,
                ranked,
                self.catalog.vectors,
                self.counts,
                recency_decay=self.ranker.recency_decay,
                recent_items=self.ranker.recent_items,
                normalisation=self.ranker.transition_normalisation,
            )
            ranked = [
                [replace(r, because=b) for r, b in zip(row, why, strict=True)]
                for row, why in zip(ranked, because, strict=True)
            ]
        self.stats.ranking_s += time.perf_counter() - started
        return ranked

    # ------------------------------------------------------------- the index
    def summary(self) -> dict[str, Any]:
        """:meth:`SharedState.summary` and how the engine ranks (mode, index, candidates)."""
        stats = self.stats
        return {
            **super().summary(),
            "ranking": {
                "mode": self.ranking_mode(),
                "index_items": None if self.index is None else len(self.index),
                "index_origin": stats.index_origin or None,
                "index_ready_s": round(stats.index_ready_s, 3),
                "candidates_per_user": round(stats.candidates_per_user, 1),
                "catalogue_from_checkpoint": stats.catalogue_loaded_s > 0,
            },
        }

    def ranking_mode(self) -> str:
        """``"exact"`` or ``"two-stage"``: the setting, or by catalogue size when ``auto``."""
        mode = self.settings.ranking
        if mode == "auto":
            if self.index is not None:  # once built, the index is kept up to date: stay
                return "two-stage"
            big = self.recommendable_items > self.settings.exact_max_items
            return "two-stage" if big else "exact"
        return mode

    def sync_index(self) -> ItemIndex:
        """The vector index, built (or restored) when first needed, then kept in step with
        the catalogue's changes (added, re-encoded, deleted items)."""
        started = time.perf_counter()
        catalog = self.catalog
        if self.index is None:
            self.index = self._restore_index()
            self.stats.index_origin = "restored"
            if self.index is None:
                self.index = ItemIndex(
                    catalog.dim, precision=self.settings.index_precision, **self._index_settings()
                )
                catalog.pop_changes()
                keys = np.flatnonzero(catalog.recommendable)
                for start in range(0, len(keys), _INDEX_CHUNK):  # no second copy of 10^6 rows
                    chunk = keys[start : start + _INDEX_CHUNK]
                    self.index.upsert(
                        chunk, catalog.vectors[chunk], threads=self.settings.index_build_threads
                    )
                self.stats.index_origin = "built"
            self.stats.index_ready_s = time.perf_counter() - started
        changed = catalog.pop_changes()
        if len(changed):
            alive = catalog.recommendable[changed]
            self.index.remove(changed[~alive])
            self.index.upsert(changed[alive], catalog.vectors[changed[alive]])
            self._index_changes += len(changed)
        self.stats.index_s += time.perf_counter() - started
        return self.index

    def _index_settings(self) -> dict[str, int]:
        s = self.settings
        return {
            "connectivity": s.index_connectivity,
            "expansion_add": s.index_expansion_add,
            "expansion_search": s.index_expansion_search,
            "threads": s.index_threads,
        }

    @property
    def _index_dir(self) -> Path:
        return Path(self.settings.data_dir) / "item-index"

    @property
    def _catalogue_dir(self) -> Path:
        return Path(self.settings.data_dir) / "catalogue"

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> None:
        """Save the catalogue (with the caller's ``extra``) and the vector index under
        ``data_dir``, so that a restart on this volume skips re-reading and re-indexing."""
        self.catalog.save(
            self._catalogue_dir, encoder_version=self.encoder.model_version, extra=extra
        )
        if self.index is not None:
            self.save_index()

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Adopt the catalogue saved on this volume by the same model; returns the ``extra``
        saved with it (None: nothing adopted, the catalogue is read from scratch)."""
        started = time.perf_counter()
        extra = self.catalog.load(self._catalogue_dir, encoder_version=self.encoder.model_version)
        if extra is not None:
            self.stats.catalogue_loaded_s = time.perf_counter() - started
        return extra

    def save_index(self) -> None:
        """Write the vector index under ``data_dir`` (for the next engine on this volume)."""
        if self.index is not None:
            self.sync_index()
            ids = [self.catalog.id_of(i) for i in range(len(self.catalog))]
            self.index.save(self._index_dir, ids, self.catalog.vectors)

    def _restore_index(self) -> ItemIndex | None:
        """The saved index, when the catalogue holds the items it was saved for."""
        if not self.persist_index:
            return None
        catalog = self.catalog
        catalog.pop_changes()  # restore() compares every vector with the saved ones
        return ItemIndex.restore(
            self._index_dir,
            [catalog.id_of(i) for i in range(len(catalog))],
            catalog.vectors,
            catalog.recommendable,
            build_threads=self.settings.index_build_threads,
            precision=self.settings.index_precision,
            **self._index_settings(),
        )

    def process(
        self, events: Sequence[BehaviourEvent], *, received_at: float | None = None
    ) -> list[Recommendation]:
        """Learn a batch, then emit recommendations per event or per user (``emit_per``)."""
        started = self.clock()
        users = self.learn(events)
        if not users:
            return []
        if self.settings.emit_per == "user":
            last: dict[str, BehaviourEvent] = {}
            for e in sorted(events, key=lambda e: e.ts):
                last[e.user_id] = e
            targets = list(last.values())
        else:
            targets = list(events)
        order = list(users)
        self._derive_facets(list(users.values()))
        ranked = dict(
            zip(
                order,
                self._rank([users[u] for u in order], self.settings.top_k, reasons=True),
                strict=True,
            )
        )
        emitted_at = self.clock()
        since = received_at if received_at is not None else started
        latency_ms = max(0.0, (emitted_at - since) * 1000.0)
        version = self.model_version
        # trusted: the engine's own values need no re-validation (1/4 of the time).
        # A user's list and cluster are built once per batch and shared by the user's events.
        parts: dict[str, tuple[ClusterInfo, list[RecommendedItem]]] = {}
        for user_id, ranked_items in ranked.items():
            u = users[user_id]
            similarity = u.cluster_similarity
            parts[user_id] = (
                trusted(
                    ClusterInfo,
                    id=u.cluster,
                    similarity=round(similarity, 6) if similarity is not None else None,
                    previous=u.previous_cluster,
                ),
                [
                    trusted(
                        RecommendedItem,
                        item_id=self.catalog.id_of(r.index),
                        score=round(r.score, 6),
                        source=r.source,
                        because=[] if r.because is None else [self.catalog.id_of(r.because)],
                    )
                    for r in ranked_items
                ],
            )
        latency = round(latency_ms, 3)
        recs = []
        for event in targets:
            cluster, items = parts[event.user_id]
            recs.append(
                trusted(
                    Recommendation,
                    user_id=event.user_id,
                    event_id=event.event_id,
                    ts=event.ts,
                    emitted_at=emitted_at,
                    cluster=cluster,
                    items=items,
                    model_version=version,
                    latency_ms=latency,
                )
            )
        self.stats.recommendations += len(recs)
        return recs
