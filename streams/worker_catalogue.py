"""The worker's catalogue: items encoded, item vectors adopted, the catalogue saved.

A worker's catalogue comes from two topics: the ``items`` records it encodes
(:meth:`WorkerCatalogue.encode_items`, for the ``item-vectors`` topic) and the
``item-vectors`` records every worker adopts (:meth:`WorkerCatalogue.apply_item_vectors`).
On a volume it survives restarts (:meth:`WorkerCatalogue.load`,
:meth:`WorkerCatalogue.save`), and the vector index is built before the worker
reports ready (:meth:`WorkerCatalogue.prepare_ranking`). The engine's other
work (events, deltas, the cluster model) is :class:`~streams.runtime.WorkerRuntime`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.contracts import CatalogItem, RecordError
from models.engine import Engine
from models.record_parser import EventParser
from models.remote_encoder import EncoderUnavailableError
from streams.dead_letters import DeadLetter
from streams.item_vectors import decode_item_vector, encode_item_vector
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings

__all__ = ["ItemsOutcome", "WorkerCatalogue", "raise_if_retrying"]

logger = logging.getLogger(__name__)


def raise_if_retrying(error: BaseException, settings: WorkerSettings) -> None:
    """Re-raise an unavailable encoder when the policy is to retry the whole batch later."""
    if isinstance(error, EncoderUnavailableError) and settings.encoder_failure == "retry":
        raise error


@dataclass
class ItemsOutcome:
    """What one items batch produced: ``item-vectors`` records (None deletes) and dead letters."""

    vector_records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class WorkerCatalogue:
    """The catalogue side of one worker's engine, without any Kafka I/O.

    Parameters
    ----------
    settings
        The worker's settings.
    engine
        The engine whose catalogue and vector index this keeps.
    parser
        Parses ``items`` records and the items inside ``item-vectors`` records.
    metrics
        Where counters and histograms go.
    dead_letter
        ``dead_letter(message, error)``: the dead letter of a record that failed.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        engine: Engine,
        parser: EventParser,
        metrics: WorkerMetrics,
        dead_letter: Callable[[Any, BaseException], DeadLetter],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.parser = parser
        self.metrics = metrics
        self._dead_letter = dead_letter

    def _raise_if_retrying(self, error: BaseException) -> None:
        raise_if_retrying(error, self.settings)

    def prepare_ranking(self) -> None:
        """Build (or restore) the vector index before the worker reports ready, when the
        catalogue is big enough for two-stage ranking: the first batch must not wait for it."""
        if self.engine.ranking_mode() == "two-stage":
            self.engine.sync_index()
            stats = self.engine.stats
            logger.info(
                "vector index %s in %.1f s (%d items)",
                stats.index_origin,
                stats.index_ready_s,
                self.engine.recommendable_items,
            )

    def load(self) -> dict[int, int]:
        """Adopt the catalogue this worker saved on its volume; returns the item-vectors
        positions it had read to (empty: nothing saved, read the topic from its start)."""
        extra = self.engine.load_checkpoint() if self.engine.persist_index else None
        if extra is None:
            return {}
        positions = {int(p): int(o) for p, o in extra.get("item_vectors_positions", {}).items()}
        logger.info(
            "catalogue of %d items loaded from the data dir in %.1f s; reading item vectors "
            "from %s",
            self.engine.recommendable_items,
            self.engine.stats.catalogue_loaded_s,
            positions,
        )
        return positions

    def save(self, item_vector_positions: dict[int, int]) -> None:
        """Save the catalogue (with how far the item-vectors topic was read) and the vector
        index under ``data_dir``, for the next start on this volume."""
        if not self.engine.persist_index:
            return
        started = time.perf_counter()
        self.engine.save_checkpoint({"item_vectors_positions": dict(item_vector_positions)})
        logger.info(
            "catalogue and index saved in %.1f s at item-vectors positions %s",
            time.perf_counter() - started,
            item_vector_positions,
        )

    def encode_items(self, batch: Sequence[Any]) -> ItemsOutcome:
        """Parse catalogue records, encode the new texts in one call, return item-vector records."""
        outcome = ItemsOutcome()
        latest: dict[str, tuple[CatalogItem | None, Any]] = {}
        for event in batch:
            message = event.message
            try:
                item = self.parser.parse_item(message.value, key=message.key)
            except RecordError as error:
                outcome.dead_letters.append(self._dead_letter(message, error))
                continue
            item_id = item.item_id if item is not None else bytes(message.key).decode("utf-8")
            latest.pop(item_id, None)  # keep the last record of an item, in arrival order
            latest[item_id] = (item, message)
        upserts = [(item, message) for item, message in latest.values() if item is not None]
        encoder = self.engine.encoder
        vectors: list[np.ndarray | None] = []
        if upserts:
            texts = [item.render_text() for item, _ in upserts]
            started = time.perf_counter()
            try:
                vectors = list(encoder.encode(texts))
            except Exception as batch_error:
                self._raise_if_retrying(batch_error)
                logger.exception("encoder failed on %d items; retrying one by one", len(texts))
                vectors = []
                for text, (_, message) in zip(texts, upserts, strict=True):
                    try:
                        vectors.append(encoder.encode([text])[0])
                    except Exception as error:
                        self._raise_if_retrying(error)
                        outcome.dead_letters.append(self._dead_letter(message, error))
                        vectors.append(None)
            self.metrics.encoder_seconds.observe(time.perf_counter() - started)
        vector_of = {
            item.item_id: vector for (item, _), vector in zip(upserts, vectors, strict=True)
        }
        for item_id, (item, _) in latest.items():
            if item is None:
                outcome.vector_records.append((item_id.encode("utf-8"), None))
            elif (vector := vector_of.get(item_id)) is not None:
                value = encode_item_vector(item, vector, encoder=encoder.model_version)
                outcome.vector_records.append((item_id.encode("utf-8"), value))
        self.metrics.items_encoded.inc(len([v for v in vectors if v is not None]))
        return outcome

    def apply_item_vectors(self, records: Sequence[Any]) -> list[tuple[Any, BaseException]]:
        """Adopt a partition's fetched ``item-vectors`` records in offset order, upserts in
        batches (one catalogue call per run of them); returns the records that failed."""
        failures: list[tuple[Any, BaseException]] = []
        run: list[tuple[CatalogItem, np.ndarray, str]] = []

        def flush() -> None:
            for version in dict.fromkeys(encoder for _, _, encoder in run):
                latest = {item.item_id: (item, v) for item, v, e in run if e == version}
                items = [item for item, _ in latest.values()]
                vectors = np.stack([v for _, v in latest.values()])
                self.engine.set_item_vectors(items, vectors, encoder_version=version)
            run.clear()

        for record in records:
            try:
                if record.value is None:
                    flush()
                    self.apply_item_vector(record.key, None)
                    continue
                item, vector, encoder = decode_item_vector(
                    record.value, self.parser, key=record.key
                )
                if run and len(vector) != len(run[0][1]):
                    flush()
                run.append((item, vector, encoder))
            except Exception as error:
                failures.append((record, error))
        applied = len(run)
        try:
            flush()
        except Exception as error:  # one bad vector size etc.: apply the run one by one
            logger.warning("batch of %d item vectors failed (%r); one by one", applied, error)
            return failures + self._apply_one_by_one(records, failures)
        self.metrics.item_vectors_applied.inc(applied)
        self.metrics.catalog_items.set(self.engine.recommendable_items)
        return failures

    def _apply_one_by_one(
        self, records: Sequence[Any], failed: list[tuple[Any, BaseException]]
    ) -> list[tuple[Any, BaseException]]:
        skip = {id(record) for record, _ in failed}
        failures: list[tuple[Any, BaseException]] = []
        for record in records:
            if id(record) in skip or record.value is None:
                continue
            try:
                self.apply_item_vector(record.key, record.value)
            except Exception as error:
                failures.append((record, error))
        return failures

    def apply_item_vector(self, key: bytes | None, value: bytes | None) -> None:
        """Adopt one ``item-vectors`` record into the catalogue (a null value deletes)."""
        if value is None:
            if key is None:
                raise RecordError("key", "a null item-vectors value needs the item's key")
            self.engine.delete_item(bytes(key).decode("utf-8"))
        else:
            item, vector, encoder = decode_item_vector(value, self.parser, key=key)
            self.engine.set_item_vectors([item], vector[None, :], encoder_version=encoder)
        self.metrics.item_vectors_applied.inc()
        self.metrics.catalog_items.set(self.engine.recommendable_items)
