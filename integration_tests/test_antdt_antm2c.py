"""antdt + antm2c: the AntDT shard service feeds the rows of a prepared AntM2C parquet data set to
async workers; one worker dies mid-shard (its lease expires) and every row is still read exactly
once (checked by the rows' own ids, not by indices)."""

from __future__ import annotations

import threading
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

antm2c = pytest.importorskip("antm2c")
antdt = pytest.importorskip("antdt")


def test_parquet_rows_exactly_once_through_the_shard_service(tmp_path):
    from antdt import Master, MasterClient, MasterConfig, ShardConfig, ShardLoader

    antm2c.generate(
        tmp_path / "raw",
        antm2c.SynthConfig(n_rows=3000, n_users=200, n_items=300),
        progress_bar=False,
    )
    antm2c.prepare(tmp_path / "raw", tmp_path / "prep", progress_bar=False)
    files = antm2c.split_files(tmp_path / "prep", "train")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    n = table.num_rows
    assert n > 500
    key_col = "row"  # the raw file's row number: unique per sample
    want = Counter(table.column(key_col).to_pylist())
    assert max(want.values()) == 1

    seen: Counter = Counter()
    lock = threading.Lock()
    with Master(MasterConfig(ShardConfig(n, 97, lease_timeout_s=0.5))) as m:

        def consume(worker: str, die_after: int | None) -> None:
            client = MasterClient(m.address, timeout_s=30)
            for k, batch in enumerate(ShardLoader(client, worker, 25, heartbeat_s=0.1)):
                if die_after is not None and k == die_after:
                    return  # dies mid-shard: no commit, no more heartbeats
                rows = table.take(pa.array(batch.indices)).column(key_col).to_pylist()
                batch.commit()
                with lock:
                    seen.update(rows)

        dying = threading.Thread(target=consume, args=("dies", 2))
        dying.start()
        dying.join(60)
        consume("survivor", None)  # WAITs for the dead worker's shard to come back, drains it
    assert seen == want
