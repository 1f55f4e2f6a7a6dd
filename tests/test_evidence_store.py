"""The evidence store on a local root: read runs the engine wrote, write runs atomically."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kalla
from kalla import EvidenceStore, RunStatus, Side
from kalla.errors import (
    EvidenceExists,
    EvidenceWriteFailed,
    JobInvalid,
    RunNotFound,
    SourceNotFound,
)


def test_reads_what_a_reconciliation_published(ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ws.write("left.csv", "id,amount\n1,10.00\n2,20.00\n3,30.00\n")
    ws.write("right.csv", "id,amount\n1,10.00\n2,20.01\n")
    recipe = ws.recipe(
        "SELECT l.id AS lid, r.id AS rid FROM l_src l JOIN r_src r "
        "ON l.id = r.id AND tolerance_match(l.amount, r.amount, 0.01)"
    )
    out = tmp_path / "evidence"
    first = kalla.reconcile(recipe, output=out)
    second = kalla.reconcile(recipe, output=out)
    store = EvidenceStore(out)
    assert [m.run_id for m in store.list_runs()] == [first.run_id, second.run_id]
    latest = store.latest_run()
    assert latest is not None and latest.run_id == second.run_id
    assert store.metadata(str(first.run_id)) == first.metadata.model_copy(
        update={"durations_s": store.metadata(first.run_id).durations_s}
    )
    matched = store.read_matched(first.run_id)
    assert sorted(matched.column("lid").to_pylist()) == [1, 2]
    unmatched = store.read_unmatched(first.run_id, Side.LEFT, columns=["id", "amount"])
    assert unmatched.to_pylist() == [{"id": 3, "amount": Decimal("30.00")}]
    assert store.read_unmatched(first.run_id, Side.RIGHT).num_rows == 0
    assert store.read_suggested(first.run_id) is None
    with pytest.raises(TypeError, match="Side"):
        store.read_unmatched(first.run_id, "LEFT")  # type: ignore[arg-type]


def test_unknown_runs_and_empty_roots(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "nothing-here")
    assert store.list_runs() == []
    assert store.latest_run() is None
    rid = uuid.uuid4()
    with pytest.raises(RunNotFound, match=str(rid)):
        store.metadata(rid)
    with pytest.raises(RunNotFound):
        store.read_matched(rid)
    with pytest.raises(RunNotFound):
        store.read_suggested(rid)
    with pytest.raises(RunNotFound, match="not a run id"):
        store.metadata("../../etc")
    assert RunNotFound.http_status == 404 and not issubclass(RunNotFound, SourceNotFound)


def test_a_written_run_is_invisible_until_published(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    run = store.init_run(match_sql="SELECT …", recipe_id="r1")
    run.write_matched(iter(pa.table({"k": [1, 2, 2]}).to_batches(max_chunksize=1)))
    run.write_unmatched(Side.LEFT, [], schema=pa.schema([("k", pa.int64())]))
    assert store.list_runs() == []
    with pytest.raises(EvidenceWriteFailed, match="unmatched_right"):
        run.publish()
    run.write_unmatched(Side.RIGHT, pa.table({"k": [9]}))
    run.update_metadata(matched_count=2, durations_s={"matching": 0.5})
    with pytest.raises(JobInvalid, match="status"):
        run.update_metadata(status="completed")
    meta = run.publish()
    assert (meta.status, meta.matched_rows, meta.matched_count) == (RunStatus.COMPLETED, 3, 2)
    assert (meta.unmatched_left_count, meta.unmatched_right_count, meta.recipe_id) == (0, 1, "r1")
    assert store.list_runs() == [meta]
    assert store.read_matched(meta.run_id).column("k").to_pylist() == [1, 2, 2]
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    with pytest.raises(EvidenceExists):
        store.init_run(meta.run_id)


def test_leaving_the_block_without_publishing_discards(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    with pytest.raises(RuntimeError), store.init_run() as run:
        run.write_matched(pa.table({"k": [1]}))
        raise RuntimeError("boom")
    assert store.list_runs() == []
    assert list((tmp_path / "runs").iterdir()) == []


def test_failed_runs_are_published_and_may_be_retried(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    rid = uuid.uuid4()
    run = store.init_run(rid)
    run.write_matched(pa.table({"k": [1]}))
    failed = run.fail(kalla.SourceReadFailed("the bank file is truncated"))
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert store.latest_run() is None
    assert store.latest_run(include_failed=True) == failed
    with pytest.raises(RunNotFound):
        store.read_matched(rid)  # a failed run publishes metadata only
    with store.init_run(rid) as retry:
        retry.write_matched(pa.table({"k": [1]}))
        retry.write_unmatched(Side.LEFT, pa.table({"k": [2]}))
        retry.write_unmatched(Side.RIGHT, pa.table({"k": [3]}))
        done = retry.publish()
    assert store.metadata(rid) == done and done.status is RunStatus.COMPLETED


def as_part_files(path: Path, sizes: list[int]) -> None:
    """Rewrite a dataset file as a folder of part files, the way the Ray engine writes it:
    ``part-NNNNN.parquet`` of ``sizes`` rows each (0 allowed), plus a killed writer's
    hidden leftover that readers must skip."""
    table = pq.read_table(path)
    assert sum(sizes) == table.num_rows
    path.unlink()
    path.mkdir()
    start = 0
    for i, n in enumerate(sizes):
        pq.write_table(table.slice(start, n), path / f"part-{i:05d}.parquet")
        start += n
    (path / ".part-00009.parquet.0123abcd.tmp").write_bytes(b"half a part")


def test_a_dataset_may_be_a_folder_of_part_files(tmp_path: Path) -> None:
    from kalla.engine._session import parquet_rows

    store = EvidenceStore(tmp_path)
    with store.init_run() as run:
        run.write_matched(pa.table({"k": [1, 2, 3, 4, 5], "v": ["a", "b", "c", "d", "e"]}))
        run.write_unmatched(Side.LEFT, pa.table({"k": [7, 8]}))
        run.write_unmatched(Side.RIGHT, pa.table({"k": pa.array([], pa.int64())}))
        meta = run.publish()
    folder = Path(store.run_path(meta.run_id))
    as_part_files(folder / "matched.parquet", [2, 0, 3])
    as_part_files(folder / "unmatched_right.parquet", [0])
    assert store.read_matched(meta.run_id).to_pydict() == {
        "k": [1, 2, 3, 4, 5], "v": ["a", "b", "c", "d", "e"]
    }  # fmt: skip
    assert store.read_matched(meta.run_id, columns=["v"]).column_names == ["v"]
    empty = store.read_unmatched(meta.run_id, Side.RIGHT)
    assert empty.num_rows == 0 and empty.schema.names == ["k"]
    assert store.read_unmatched(meta.run_id, Side.LEFT).column("k").to_pylist() == [7, 8]
    assert parquet_rows(folder / "matched.parquet") == 5


def test_a_failed_run_drops_folders_of_part_files(tmp_path: Path) -> None:
    from kalla.evidence import RunWriter

    store = EvidenceStore(tmp_path)
    rid = uuid.uuid4()
    run = store.init_run(rid)
    writer: RunWriter = run._writer
    writer.matched_path().mkdir()  # as the Ray engine makes them before its tasks write
    pq.write_table(pa.table({"k": [1]}), writer.matched_path() / "part-00000.parquet")
    failed = run.fail(kalla.ExecutionFailed("a Ray task failed"))
    assert failed.status is RunStatus.FAILED
    assert [p.name for p in Path(store.run_path(rid)).iterdir()] == ["metadata.json"]
