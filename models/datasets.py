"""Readers of real event files: MovieLens and the events/items JSONL contracts.

``load_dataset(path)`` detects the format of a folder (or a single ``.jsonl``
file) and returns the catalogue and the events in event-time order (ties
keep file order). MovieLens ratings become ``rate`` events of user ``u<id>``
on item ``m<id>``; a movie's text is its title and genres.

Supported layouts:

* ``ratings.csv`` + ``movies.csv`` (ml-latest-small, ml-25m …);
* ``ratings.dat`` or ``ratings*.dat.gz`` + ``movies.dat`` (ML-1M, latin-1);
* ``events.jsonl`` (+ optional ``items.jsonl``) in the driftrec contracts.

Bad JSONL lines are not fatal: they are returned in ``rejected`` with the reason.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.contracts import BehaviourEvent, CatalogItem, RecordError
from models.record_parser import EventParser

__all__ = ["Dataset", "RejectedRecord", "detect_format", "load_dataset"]


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A line that could not be parsed: where it was and why."""

    source: str
    line: int
    error: str
    raw: str


@dataclass
class Dataset:
    """A catalogue and an event stream in event-time order."""

    name: str
    items: list[CatalogItem]
    events: list[BehaviourEvent]
    rejected: list[RejectedRecord] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """``movielens-csv``, ``movielens-dat`` or ``jsonl``; a clear error otherwise."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset folder or .jsonl file")
    if (path / "ratings.csv").exists() and (path / "movies.csv").exists():
        return "movielens-csv"
    if (path / "movies.dat").exists() and _dat_ratings(path):
        return "movielens-dat"
    if (path / "events.jsonl").exists():
        return "jsonl"
    raise ValueError(
        f"{path}: expected ratings.csv+movies.csv, ratings.dat(.gz)+movies.dat, "
        f"or events.jsonl (+items.jsonl); found {sorted(p.name for p in path.iterdir())}"
    )


def load_dataset(path: Path | str, parser: EventParser, *, limit: int | None = None) -> Dataset:
    """Read a dataset; ``limit`` keeps the first events in event-time order."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "movielens-csv":
        items = list(_movies_csv(path / "movies.csv"))
        events = list(_ratings(_ratings_csv(path / "ratings.csv"), parser))
        rejected: list[RejectedRecord] = []
    elif kind == "movielens-dat":
        items = list(_movies_dat(path / "movies.dat"))
        rows: list[tuple[str, str, str, str]] = []
        for ratings in _dat_ratings(path):
            rows.extend(_ratings_dat(ratings))
        events = list(_ratings(iter(rows), parser))
        rejected = []
    else:
        events_path = path if path.is_file() else path / "events.jsonl"
        items_path = events_path.with_name("items.jsonl")
        rejected = []
        items = []
        if items_path.exists():
            for record, error in _jsonl(items_path, parser.parse_item, rejected):
                if record is not None and error is None:
                    items.append(record)
        events = [
            e for e, error in _jsonl(events_path, parser.parse_event, rejected) if error is None
        ]
    order = sorted(range(len(events)), key=lambda i: events[i].ts)  # stable: file order on ties
    events = [events[i] for i in order]
    if limit is not None:
        events = events[:limit]
    return Dataset(name=path.name, items=items, events=events, rejected=rejected)


def _dat_ratings(path: Path) -> list[Path]:
    found = sorted(path.glob("ratings*.dat.gz")) + sorted(path.glob("ratings*.dat"))
    return found


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _movies_csv(path: Path) -> Iterator[CatalogItem]:
    with _open_text(path, "utf-8") as f:
        for row in csv.DictReader(f):
            yield _movie(row["movieId"], row["title"], row["genres"])


def _movies_dat(path: Path) -> Iterator[CatalogItem]:
    with _open_text(path, "latin-1") as f:
        for line in f:
            if line.strip():
                movie_id, title, genres = line.rstrip("\r\n").split("::")
                yield _movie(movie_id, title, genres)


def _movie(movie_id: str, title: str, genres: str) -> CatalogItem:
    tags = [g for g in genres.split("|") if g and g != "(no genres listed)"]
    return CatalogItem(item_id=f"m{movie_id}", title=title, tags=tags)


def _ratings_csv(path: Path) -> Iterator[tuple[str, str, str, str]]:
    with _open_text(path, "utf-8") as f:
        for row in csv.DictReader(f):
            yield row["userId"], row["movieId"], row["rating"], row["timestamp"]


def _ratings_dat(path: Path) -> Iterator[tuple[str, str, str, str]]:
    with _open_text(path, "latin-1") as f:
        for line in f:
            if line.strip():
                user, movie, rating, ts = line.rstrip("\r\n").split("::")
                yield user, movie, rating, ts


def _ratings(
    rows: Iterator[tuple[str, str, str, str]], parser: EventParser
) -> Iterator[BehaviourEvent]:
    for user, movie, rating, ts in rows:
        yield parser.parse_event(
            {
                "user_id": f"u{user}",
                "item_id": f"m{movie}",
                "event": "rate",
                "rating": float(rating),
                "ts": float(ts),
                "event_id": f"u{user}-m{movie}-{ts}",
            }
        )


def _jsonl(
    path: Path, parse: Callable[[bytes], Any], rejected: list[RejectedRecord]
) -> Iterator[tuple[Any, str | None]]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield parse(line), None
            except RecordError as exc:
                rejected.append(
                    RejectedRecord(
                        str(path), number, str(exc), line[:200].decode("utf-8", "replace")
                    )
                )
                yield None, str(exc)
