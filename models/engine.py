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

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from threadpoolctl import threadpool_limits

from models.candidates import CandidateBudget, TwoStageRanker
from models.catalogue_index import CatalogueIndex
from models.cluster_labels import ClusterLabeller
from models.clustering import DecayingCentroids
from models.clustering.base import Clusterer
from models.collaborative import CollaborativeCounts
from models.contracts import (
    DISMISS_EVENT,
    BehaviourEvent,
    CatalogItem,
    InterestEvent,
    Recommendation,
)
from models.facets import user_facets
from models.interest import pooled_interest, render_sequence
from models.interest_drift import lifecycle_event, moved_events, with_labels
from models.item_catalog import ItemCatalog, TextEncoderLike
from models.item_rules import ItemRules
from models.ranking import HybridRanker, RankedItem, RankingRequest
from models.reasons import explain
from models.recommendation_records import recommendation_records
from models.settings import EngineSettings
from models.shared_state import SharedState
from models.state_store import MemoryStore, RocksDictStore, StateStore, WindowStore
from models.user_state import (
    CLUSTER_KEY,
    UserState,
    pack_cluster,
    recent_indices,
    unpack_cluster,
    window_vectors,
)
from models.user_window import WindowEntry
from models.vector_index import ItemIndex

__all__ = ["Engine", "UserState"]


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
        self.counts = CollaborativeCounts.from_settings(settings, track_deltas=ships_deltas)
        self.ranker = HybridRanker.from_settings(settings)
        self.two_stage = TwoStageRanker(
            self.ranker,
            CandidateBudget.split(settings.candidates),
            user_lists=settings.candidate_cache_users,
        )
        self.labeller = ClusterLabeller()  #: readable cluster names (c-TF-IDF of tags)
        #: The vector index and the catalogue's checkpoints under ``data_dir``.
        self.catalogue_index = CatalogueIndex(self.catalog, settings, persist=persist_index)
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
        return DecayingCentroids.from_settings(settings)

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
            previous = recent_indices(
                user.window, self.catalog.index_of, s.transition_window, before=event.ts
            )
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
            extra={CLUSTER_KEY + u.user_id: pack_cluster(u) for u in states},
        )
        self.stats.store_s += time.perf_counter() - started
        self.stats.events += len(events)
        self.stats.batches += 1
        return users

    def _load_users(self, user_ids: list[str]) -> dict[str, UserState]:
        started = time.perf_counter()
        windows = self.windows.get_windows(user_ids)
        seen = self.windows.get_seen(user_ids)
        clusters = self.store.get_many([CLUSTER_KEY + u for u in user_ids])
        self.stats.store_s += time.perf_counter() - started
        users: dict[str, UserState] = {}
        for user_id, window, seen_items, raw in zip(user_ids, windows, seen, clusters, strict=True):
            cluster, drift = unpack_cluster(raw)
            users[user_id] = UserState(
                user_id, window, seen_items, cluster=cluster, previous_cluster=cluster, drift=drift
            )
        return users

    def _track_drift(self, states: Sequence[UserState]) -> None:
        """Confirmed moves between clusters become ``moved`` interest events."""
        self._interest_events += moved_events(
            states,
            getattr(self.clusterer, "centroid", None),
            confirm=self.settings.interest_event_confirm,
            model_version=self.model_version,
        )

    def cluster_labels(
        self, wanted: Iterable[int | None] = (), *, t: float = 0.0
    ) -> dict[int, str]:
        """The live clusters' labels (models/cluster_labels.py), recomputed every few
        batches (event time ``t``) and whenever a cluster in ``wanted`` has none yet."""
        centroids = getattr(self.clusterer, "centroids", None)
        if centroids is None or not self.labeller.due(c for c in wanted if c is not None):
            return self.labeller.labels
        ids, unit = centroids()
        index = self.catalogue_index.index
        return self.labeller.refresh_from(ids.tolist(), unit, self.catalog, self.counts, index, t)

    def pop_interest_events(self) -> list[InterestEvent]:
        """The interest events since the last call (users' moves; cluster births, merges and
        retirements where this engine numbers the clusters), oldest first."""
        events, self._interest_events = self._interest_events, []
        return with_labels(events, self.labeller.labels) + self.labeller.pop_relabelled(
            self.model_version
        )

    def _window_vectors(self, u: UserState) -> tuple[np.ndarray, np.ndarray]:
        """The window's item vectors ``[n, d]`` and pooling weights ``[n]`` (kept on ``u``)."""
        if u.window_vectors is None:
            u.window_vectors = window_vectors(u.window, self.catalog, self.settings)
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
            u.recent = recent_indices(u.window, self.catalog.index_of, max(s.score_recent_items, 1))
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
        points = np.stack([cast(np.ndarray, u.interest) for u in with_interest])
        times = np.array([u.window.newest_ts for u in with_interest], np.float64)
        labels = self.clusterer.learn_predict_many(points, times)
        centroid_of = getattr(self.clusterer, "centroid", None)
        for u, label, point in zip(with_interest, labels.tolist(), points, strict=True):
            u.cluster = None if label < 0 else int(label)
            centroid = None
            if centroid_of is not None and u.cluster is not None:
                centroid = centroid_of(u.cluster)
            u.cluster_similarity = float(np.dot(point, centroid)) if centroid is not None else None
        pop_events = getattr(self.clusterer, "pop_events", None)  # clusterers with a lifecycle
        changes = pop_events() if pop_events is not None else []
        # A worker's clusterer proposes; the model agent's (or a lone process's) decides.
        authority = getattr(self.clusterer, "authoritative", True)
        if changes and authority:
            self.model_version += 1
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
                index_changes=self.catalogue_index.changes,
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
            "cluster_labels": {str(c): label for c, label in self.labeller.labels.items()},
        }

    def ranking_mode(self) -> str:
        """``"exact"`` or ``"two-stage"``: the setting, or by catalogue size when ``auto``."""
        return self.catalogue_index.mode(self.recommendable_items)

    @property
    def index(self) -> ItemIndex | None:
        """The vector index two-stage ranking queries (None until first needed)."""
        return self.catalogue_index.index

    @property
    def persist_index(self) -> bool:
        return self.catalogue_index.persist

    def sync_index(self) -> ItemIndex:
        """The vector index, built or restored when first needed, then kept in step with the
        catalogue (models/catalogue_index.py); its time is counted in ``stats.index_s``."""
        started = time.perf_counter()
        index = self.catalogue_index.sync()
        self.stats.index_s += time.perf_counter() - started
        if self.catalogue_index.origin and not self.stats.index_origin:
            self.stats.index_origin = self.catalogue_index.origin
            self.stats.index_ready_s = self.catalogue_index.ready_s
        return index

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> None:
        """Save the catalogue (with the caller's ``extra``) and the vector index under
        ``data_dir``, so that a restart on this volume skips re-reading and re-indexing."""
        self.catalogue_index.save_checkpoint(self.encoder.model_version, extra)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Adopt the catalogue saved on this volume by the same model; returns the ``extra``
        saved with it (None: nothing adopted, the catalogue is read from scratch)."""
        started = time.perf_counter()
        extra = self.catalogue_index.load_checkpoint(self.encoder.model_version)
        if extra is not None:
            self.stats.catalogue_loaded_s = time.perf_counter() - started
        return extra

    def save_index(self) -> None:
        """Write the vector index under ``data_dir`` (for the next engine on this volume)."""
        self.catalogue_index.save_index()

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
        recs = recommendation_records(
            targets,
            users,
            ranked,
            self.catalog.id_of,
            labels=self.cluster_labels((u.cluster for u in users.values()), t=targets[-1].ts),
            emitted_at=emitted_at,
            latency_ms=latency_ms,
            model_version=self.model_version,
        )
        self.stats.recommendations += len(recs)
        return recs
