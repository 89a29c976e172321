"""Dataset readers: MovieLens csv / dat(.gz) and the JSONL contracts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from models.datasets import detect_format, load_dataset
from models.record_parser import EventParser
from models.settings import EngineSettings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def parser() -> EventParser:
    return EventParser.from_settings(EngineSettings())


def test_movielens_csv(tmp_path, parser):
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"Heat, The (1995)",Crime\n'
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,4.5,200\n1,1,0.5,100\n2,1,3.0,100\n"
    )
    data = load_dataset(tmp_path, parser)
    assert detect_format(tmp_path) == "movielens-csv"
    assert [i.item_id for i in data.items] == ["m1", "m2"]
    assert data.items[1].title == "Heat, The (1995)" and data.items[0].tags == [
        "Adventure",
        "Animation",
    ]
    assert [(e.user_id, e.item_id, e.ts) for e in data.events] == [
        ("u1", "m1", 100.0),
        ("u2", "m1", 100.0),
        ("u1", "m2", 200.0),
    ]  # time order, ties in file order
    assert data.events[0].rating == 0.5


def test_movielens_dat_gz(tmp_path, parser):
    (tmp_path / "movies.dat").write_bytes("1::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    with gzip.open(tmp_path / "ratings_users_1-2.dat.gz", "wt") as f:
        f.write("1::1::5::978300760\n2::1::3::978300761\n")
    data = load_dataset(tmp_path, parser)
    assert detect_format(tmp_path) == "movielens-dat"
    assert data.items[0].title == "Amélie (2001)"
    assert [e.user_id for e in data.events] == ["u1", "u2"]


def test_jsonl_contracts_with_bad_lines(tmp_path, parser):
    events = [
        {"user_id": "a", "item_id": "x", "event": "view", "ts": "2024-01-01T00:00:00Z"},
        {"user_id": "a", "item_id": "y", "event": "bogus", "ts": 1},
        {"user_id": "b", "item_id": "x", "event": "purchase", "ts": 1704067100.0},
    ]
    lines = [json.dumps(e) for e in events] + ["{not json"]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.jsonl").write_text(json.dumps({"item_id": "x", "title": "X"}) + "\n")
    data = load_dataset(tmp_path, parser)
    assert [e.user_id for e in data.events] == ["b", "a"]
    assert [i.item_id for i in data.items] == ["x"]
    assert [r.line for r in data.rejected] == [2, 4]
    assert "event" in data.rejected[0].error


def test_unknown_folder_is_a_clear_error(tmp_path, parser):
    with pytest.raises(ValueError, match=r"expected ratings\.csv"):
        load_dataset(tmp_path, parser)


@pytest.mark.skipif(
    not (SHARED / "ml-latest-small").exists(),
    reason="shared dataset ml-latest-small not present (development data only)",
)
def test_real_ml_latest_small_counts(parser):
    data = load_dataset(SHARED / "ml-latest-small", parser)
    assert len(data.events) == 100_836
    assert len({e.user_id for e in data.events}) == 610
    assert len(data.items) == 9_742
