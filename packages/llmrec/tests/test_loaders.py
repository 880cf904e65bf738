import gzip
import json

import pandas as pd
import pytest
from llmrec import (
    DataError,
    PrepConfig,
    load_amazon2018,
    load_amazon2023,
    load_parquet,
    load_recbole,
    prepare,
    write_recbole,
)


def _write_gz_lines(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_amazon2018_ratings_csv_item_first_and_meta_gz(tmp_path):
    # ratings-only CSV: item,user,rating,timestamp, no header (item first!)
    (tmp_path / "Prime_Pantry.csv").write_text(
        "B001,A1,5.0,1400000000\nB002,A1,4.0,999999999\nB001,A2,3.0,1300000000\n"
        "B003,A1,5.0,1000000000\n"
    )
    _write_gz_lines(
        tmp_path / "meta_Prime_Pantry.json.gz",
        [
            {"asin": "B001", "title": "Oat &amp; Honey Granola", "category": ["Pantry"]},
            {"asin": "B002", "title": "Sea Salt", "brand": "X"},
            {"asin": "B003", "title": "Rice"},
            {"title": "row without asin"},
        ],
    )
    inter, items = load_amazon2018(
        tmp_path / "Prime_Pantry.csv", tmp_path / "meta_Prime_Pantry.json.gz", "Pantry"
    )
    assert list(inter.columns) == ["user", "item", "ts", "domain"]
    assert set(inter["user"]) == {"A1", "A2"} and set(inter["item"]) == {"B001", "B002", "B003"}
    assert inter["ts"].dtype == "int64" and inter["ts"].min() == 999_999_999
    assert (
        dict(zip(items["item"], items["title"], strict=True))["B001"] == "Oat &amp; Honey Granola"
    )
    data = prepare([(inter, items)], PrepConfig(kcore=1))
    a1 = data.users.index("A1")
    # numeric order: 999999999 < 1000000000 < 1400000000 (as strings the first sorts last)
    assert [data.item_ids[i - 1] for i in data.seqs[a1]] == ["B002", "B003", "B001"]
    assert data.title(data.item_index("B001")) == "Oat & Honey Granola"


def test_amazon2018_review_json_and_errors(tmp_path):
    _write_gz_lines(
        tmp_path / "Arts_5.json.gz",
        [
            {"reviewerID": "A1", "asin": "X1", "overall": 5.0, "unixReviewTime": 1500000000},
            {"reviewerID": "A1", "asin": "X2", "overall": 4.0, "unixReviewTime": 1500000100},
        ],
    )
    (tmp_path / "meta.json").write_text(json.dumps({"asin": "X1", "title": "Paint"}) + "\n")
    inter, items = load_amazon2018(tmp_path / "Arts_5.json.gz", tmp_path / "meta.json", "Arts")
    assert len(inter) == 2 and list(items["item"]) == ["X1"]
    # user first (wrong column order) puts a rating where the timestamp goes
    (tmp_path / "bad.csv").write_text("A1,B001,5.0,not-a-time\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: timestamp"):
        load_amazon2018(tmp_path / "bad.csv", tmp_path / "meta.json", "Arts")
    (tmp_path / "broken.json").write_text('{"asin": "X1", "title": "ok"}\n{"asin": \n')
    with pytest.raises(DataError, match=r"broken\.json:2"):
        load_amazon2018(tmp_path / "Arts_5.json.gz", tmp_path / "broken.json", "Arts")
    with pytest.raises(DataError, match="not found"):
        load_amazon2018(tmp_path / "nope.csv", tmp_path / "meta.json", "Arts")
    # a truncated gzip file is reported, not half-read silently
    raw = (tmp_path / "Arts_5.json.gz").read_bytes()
    (tmp_path / "trunc.json.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_amazon2018(tmp_path / "trunc.json.gz", tmp_path / "meta.json", "Arts")


def test_amazon2023_jsonl_parent_asin_milliseconds(tmp_path):
    reviews = [
        {
            "rating": 5.0,
            "title": "great",
            "text": "...",
            "asin": "C1",
            "parent_asin": "P1",
            "user_id": "U1",
            "timestamp": 1588687728923,
            "verified_purchase": True,
        },
        {
            "rating": 4.0,
            "title": "ok",
            "text": "...",
            "asin": "C2",
            "parent_asin": "P1",
            "user_id": "U2",
            "timestamp": 1588687728000,
            "verified_purchase": True,
        },
        {
            "rating": 3.0,
            "title": "meh",
            "text": "...",
            "asin": "C3",
            "parent_asin": "P2",
            "user_id": "U1",
            "timestamp": 1600000000000,
            "verified_purchase": False,
        },
    ]
    (tmp_path / "All_Beauty.jsonl").write_text("\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = [
        {"main_category": "All Beauty", "title": "Lip Balm", "parent_asin": "P1", "store": "S"},
        {"main_category": "All Beauty", "title": "Face Cream", "parent_asin": "P2"},
    ]
    _write_gz_lines(tmp_path / "meta_All_Beauty.jsonl.gz", meta)
    inter, items = load_amazon2023(
        tmp_path / "All_Beauty.jsonl", tmp_path / "meta_All_Beauty.jsonl.gz", "Beauty"
    )
    assert set(inter["item"]) == {"P1", "P2"} and inter["ts"].max() == 1600000000000
    assert set(items["title"]) == {"Lip Balm", "Face Cream"}
    inter2, _ = load_amazon2023(
        tmp_path / "All_Beauty.jsonl",
        tmp_path / "meta_All_Beauty.jsonl.gz",
        "Beauty",
        item_key="asin",
    )
    assert set(inter2["item"]) == {"C1", "C2", "C3"}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"user_id": "U", "parent_asin": "P"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        load_amazon2023(tmp_path / "bad.jsonl", tmp_path / "meta_All_Beauty.jsonl.gz", "B")


def test_recbole_atomic_files_roundtrip(tmp_path, small_data):
    (tmp_path / "Scientific.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\ti1\t5.0\t1500000000.0\nu1\ti2\t4.0\t999999999\nu2\ti1\t3.0\t1400000000\n"
    )
    (tmp_path / "Scientific.item").write_text(
        "item_id:token\ttitle:token_seq\tcategories:token_seq\n"
        "i1\tmicroscope slides\tlab\ni2\t\tlab\n"
    )
    inter, items = load_recbole(tmp_path, "Scientific")
    assert set(inter["domain"]) == {"Scientific"} and inter["ts"].dtype == "int64"
    assert items.set_index("item").loc["i2", "title"] is None  # empty title = missing
    # write the canonical tables of a multi-domain data set and read them back
    rows = [
        (
            small_data.users[u],
            small_data.item_ids[i - 1],
            t,
            small_data.domains[small_data.item_domain[i]],
        )
        for u, s in enumerate(small_data.seqs[:20])
        for t, i in enumerate(s)
    ]
    inter = pd.DataFrame(rows, columns=["user", "item", "ts", "domain"])
    items = pd.DataFrame(
        {
            "item": small_data.item_ids,
            "domain": [small_data.domains[x] for x in small_data.item_domain[1:]],
            "title": small_data.titles,
        }
    )
    write_recbole(inter, items, tmp_path / "out", "mixed")
    i2, m2 = load_recbole(tmp_path / "out", "mixed")
    pd.testing.assert_frame_equal(i2, inter.astype({"ts": "int64"}))
    assert list(m2["title"]) == small_data.titles
    (tmp_path / "bad.inter").write_text("user_id\titem_id\n")
    (tmp_path / "bad.item").write_text("item_id:token\ttitle:token_seq\n")
    with pytest.raises(DataError, match="RecBole type"):
        load_recbole(tmp_path, "bad")


def test_generic_parquet_with_column_mapping(tmp_path):
    pd.DataFrame({"uid": ["a", "a", "b"], "iid": ["x", "y", "x"], "time": [3, 1, 2]}).to_parquet(
        tmp_path / "inter.parquet"
    )
    pd.DataFrame({"iid": ["x", "y"], "name": ["red shoe", "blue hat"]}).to_parquet(
        tmp_path / "items.parquet"
    )
    cols = {"user": "uid", "item": "iid", "ts": "time", "title": "name"}
    inter, items = load_parquet(
        tmp_path / "inter.parquet", tmp_path / "items.parquet", columns=cols, domain="fashion"
    )
    assert list(inter["ts"]) == [3, 1, 2] and set(items["domain"]) == {"fashion"}
    with pytest.raises(DataError, match="pass domain="):
        load_parquet(tmp_path / "inter.parquet", tmp_path / "items.parquet", columns=cols)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet"):
        load_parquet(tmp_path / "junk.parquet", tmp_path / "items.parquet", columns=cols)
