"""The Ray engine gives exactly the local engine's answers, on a real two-node cluster."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import kalla
from benchmarks.generate import generate
from kalla.distributed import RayOptions
from kalla.engine import run_job
from kalla.errors import BroadcastTooLarge, ClusterUnavailable, DuplicatePrimaryKey
from kalla.evidence._store import dataset_files
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("ray")


def _request(recipe: Path | dict[str, Any], base: Path | None = None) -> kalla.JobRequest:
    loaded = (
        kalla.Recipe.load(recipe) if isinstance(recipe, Path)
        else kalla.Recipe.from_dict(recipe, base_dir=base)
    )  # fmt: skip
    return loaded.to_job_request(run_id=uuid.uuid4())


def _schema(path: str) -> pa.Schema:
    """The one schema of a dataset: a Parquet file, or a folder whose parts all agree."""
    schemas = [pq.read_schema(p).remove_metadata() for p in dataset_files(Path(path))]
    assert schemas and all(s == schemas[0] for s in schemas), schemas
    return schemas[0]


def _answer(result: kalla.RunResult, keys: dict[str, list[str]]) -> dict[str, Any]:
    """What a run answered, read from its evidence (each dataset a file or a folder of parts)."""

    def key(struct: dict[str, Any] | None) -> tuple[Any, ...]:
        return tuple(struct.values()) if struct else ()

    matched = pq.read_table(result.output_paths.matched, columns=["left_key", "right_key"])
    reasons = ["_reason", "_closest_candidate"]
    left = pq.read_table(
        result.output_paths.unmatched_left, columns=keys["left"] + reasons
    ).to_pylist()
    right = pq.read_table(
        result.output_paths.unmatched_right, columns=keys["right"] + reasons
    ).to_pylist()
    return {
        "counts": (result.matched_count, result.unmatched_left_count, result.unmatched_right_count),
        "sides": {s: c.model_dump() for s, c in result.metadata.counts.items()},
        "rows": result.metadata.matched_rows,
        "stored": (matched.num_rows, len(left), len(right)),  # a duplicated part would show
        "pairs": sorted(
            {(key(m["left_key"]), key(m["right_key"])) for m in matched.to_pylist()}, key=repr
        ),
        # the same records, unmatched for the same reasons with the same closest candidates
        "left": sorted((tuple(r.values()) for r in left), key=repr),
        "right": sorted((tuple(r.values()) for r in right), key=repr),
        "schemas": [
            _schema(p)
            for p in (
                result.output_paths.matched,
                result.output_paths.unmatched_left,
                result.output_paths.unmatched_right,
            )
        ],
    }


def _both(request: kalla.JobRequest, tmp: Path, address: str, **opts: Any) -> tuple[Any, Any]:
    keys = {s.value: request.keys(s) for s in kalla.Side}
    local = run_job(request, tmp / "local")
    ray_result = run_job(
        request, tmp / "ray", engine="ray",
        ray_options=RayOptions(address=address, **{"partitions": 3, "chunk_rows": 700, **opts}),
    )  # fmt: skip
    assert ray_result.metadata.engine == "ray"
    return _answer(local, keys), _answer(ray_result, keys)


@pytest.mark.parametrize(
    ("shape", "rows", "fmt"),
    [("one_to_one", 3000, "csv"), ("split", 1500, "parquet"), ("batch", 2000, "csv"),
     ("cross", 500, "parquet")],
)  # fmt: skip
def test_benchmark_shapes_equal_local(
    ray_cluster: str, tmp_path: Path, shape: str, rows: int, fmt: str
) -> None:
    data = generate(shape, rows, tmp_path / "data", seed=5, fmt=fmt)
    local, distributed = _both(_request(data.recipe), tmp_path, ray_cluster)
    assert distributed == local
    assert local["counts"][0] > 0


_LEFT = """\
    id,region,ref,amount,tag
    1,EU,A-1,100.00,x
    2,EU,A-2,50.00,y
    3,US,,70.00,x
    ,EU,A-4,10.00,x
    5,EU,A-5,99.98,
    6,US,a-6,12.00,z
    7,EU,A-7,1.00,x
    """
_RIGHT = """\
    id,region,ref,amount,tag
    1,EU,A-1,100.02,x
    2,EU,A-2,50.03,y
    3,US,,70.00,x
    4,EU,A-4,10.00,x
    5,EU,A-5,99.98,
    6,US,A-6,12.00,z
    8,EU,A-7,1.00,x
    9,EU,A-7,1.00,w
    """

EDGE_SQL = {
    "tolerance": "SELECT l.id, r.id FROM l_src l JOIN r_src r ON l.ref = r.ref "
    "AND tolerance_match(l.amount, r.amount, 0.02)",
    "keys_not_projected_expression_key": "SELECT l.amount FROM l_src l JOIN r_src r "
    "ON normalize_ref(l.ref) = normalize_ref(r.ref)",
    "composite": "SELECT * FROM l_src l JOIN r_src r ON l.region = r.region AND l.tag = r.tag",
    "where_equality": "SELECT l.ref FROM l_src l, r_src r WHERE l.ref = r.ref AND l.amount > 5",
    "no_equality": "SELECT l.id, r.id FROM l_src l JOIN r_src r ON l.amount < r.amount",
    "same_named_keys": "SELECT l.id, r.id, l.tag FROM l_src l JOIN r_src r ON l.id = r.id",
    "single_task": "SELECT l.id, r.id FROM l_src l JOIN (SELECT id, ref || '' AS k FROM r_src) r "
    "ON l.ref = r.k",
}


@pytest.mark.parametrize("case", sorted(EDGE_SQL))
def test_edge_shapes_equal_local(ray_cluster: str, tmp_path: Path, case: str) -> None:
    ws = Workspace(tmp_path)
    ws.write("left.csv", _LEFT)
    ws.write("right.csv", _RIGHT)
    request = _request(ws.recipe(EDGE_SQL[case]))
    local, distributed = _both(request, tmp_path, ray_cluster)
    assert distributed == local


def test_without_reasons_both_engines_write_plain_unmatched_records(
    ray_cluster: str, tmp_path: Path
) -> None:
    data = generate("one_to_one", 800, tmp_path / "data", seed=9)
    request = _request(data.recipe).model_copy(update={"explain_unmatched": False})
    keys = {s.value: request.keys(s) for s in kalla.Side}
    local = run_job(request, tmp_path / "local")
    ray_result = run_job(
        request, tmp_path / "ray", engine="ray",
        ray_options=RayOptions(address=ray_cluster, partitions=2, chunk_rows=300),
    )  # fmt: skip
    for result in (local, ray_result):
        assert "_reason" not in _schema(result.output_paths.unmatched_left).names
    cols = {s: keys[s] for s in keys}
    assert sorted(
        pq.read_table(local.output_paths.unmatched_left, columns=cols["left"]).to_pylist(), key=repr
    ) == sorted(
        pq.read_table(ray_result.output_paths.unmatched_left, columns=cols["left"]).to_pylist(),
        key=repr,
    )


def test_composite_primary_keys_and_an_empty_side(ray_cluster: str, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write("left.csv", _LEFT)
    ws.write("right.csv", "id,region,ref,amount,tag\n")
    recipe = ws.recipe(
        "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref",
        left_key=["id", "region"], right_key=["id", "region"],
        right_opts={"schema": ["id", "region", "ref", "amount", "tag"]},
    )  # fmt: skip
    local, distributed = _both(_request(recipe), tmp_path, ray_cluster)
    assert distributed == local
    assert local["counts"] == (0, 7, 0)
    for name in ("matched.parquet", "unmatched_right.parquet"):  # no rows: one empty part
        assert [p.name for p in (tmp_path / "ray" / name).iterdir()] == ["part-empty.parquet"]


def test_duplicate_keys_are_found_across_buckets(ray_cluster: str, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write("left.csv", "id,ref\n1,a\n2,b\n1,c\n")
    ws.write("right.csv", "id,ref\n1,a\n")
    request = _request(ws.recipe("SELECT * FROM l_src l JOIN r_src r ON l.ref = r.ref"))
    with pytest.raises(DuplicatePrimaryKey):
        run_job(request, tmp_path / "ray", engine="ray",
                ray_options=RayOptions(address=ray_cluster, partitions=4, chunk_rows=1))  # fmt: skip


def test_broadcast_over_the_limit_is_refused(ray_cluster: str, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write("left.csv", _LEFT)
    ws.write("right.csv", _RIGHT)
    request = _request(ws.recipe(EDGE_SQL["no_equality"]))
    with pytest.raises(BroadcastTooLarge, match="no equality condition"):
        run_job(request, tmp_path / "ray", engine="ray",
                ray_options=RayOptions(address=ray_cluster, broadcast_limit=10))  # fmt: skip
    meta = kalla.evidence.read_metadata(tmp_path / "ray")
    assert meta is not None and meta.status == "failed" and meta.engine == "ray"
    assert [p.name for p in (tmp_path / "ray").iterdir()] == ["metadata.json"]  # no part folders


def test_unreachable_cluster_is_an_immediate_clear_error() -> None:
    from kalla.distributed._cluster import _check_reachable

    with socket_closed() as port:
        started = time.monotonic()
        with pytest.raises(ClusterUnavailable, match="cannot reach the Ray cluster"):
            _check_reachable(f"127.0.0.1:{port}")
        assert time.monotonic() - started < 2


class socket_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_cli_runs_on_ray(ray_cluster: str, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from kalla.cli import main

    data = generate("one_to_one", 800, tmp_path / "data", seed=2)
    out = {}
    for engine in ("local", "ray"):
        res = CliRunner().invoke(
            main, ["run", str(data.recipe), "-o", str(tmp_path / engine), "--json"],
            env={"KALLA_ENGINE": engine, "KALLA_RAY_ADDRESS": ray_cluster},
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        out[engine] = json.loads(res.output)
    assert {k: out["ray"][k] for k in ("matched_count", "unmatched_left_count")} == {
        k: out["local"][k] for k in ("matched_count", "unmatched_left_count")
    }
    assert out["ray"]["unmatched_right_count"] == out["local"]["unmatched_right_count"]


def _task_pids(name: str) -> list[int]:
    """PIDs of Ray workers whose process title says they are running task ``name``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(f"ray::{name}"):
            pids.append(int(entry))
    return pids


def test_a_worker_killed_mid_job_still_gives_the_right_answer(
    ray_cluster: str, tmp_path: Path
) -> None:
    data = generate("cross", 2500, tmp_path / "data", seed=9, fmt="parquet")
    request = _request(data.recipe)
    keys = {s.value: request.keys(s) for s in kalla.Side}
    expected = _answer(run_job(request, tmp_path / "local"), keys)
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["result"] = run_job(
                request, tmp_path / "ray", engine="ray",
                ray_options=RayOptions(address=ray_cluster, partitions=2),
            )  # fmt: skip
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        pids = _task_pids("_reduce_task")
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.01)
    thread.join(timeout=120)
    assert killed is not None, "no reduce task was seen running"
    assert "error" not in outcome, outcome.get("error")
    assert _answer(outcome["result"], keys) == expected
    run_dir = Path(outcome["result"].run_dir)
    assert not [p for p in run_dir.rglob(".*")], "a killed task's temporary file was published"


def test_recipe_dict_with_reconcile_api(ray_cluster: str, tmp_path: Path) -> None:
    data = generate("split", 600, tmp_path / "data", seed=1)
    raw = yaml.safe_load(data.recipe.read_text())
    result = kalla.reconcile(
        kalla.Recipe.from_dict(raw, base_dir=data.directory),
        output=tmp_path / "out", engine="ray", ray_address=ray_cluster,
    )  # fmt: skip
    local = kalla.reconcile(kalla.Recipe.from_dict(raw, base_dir=data.directory),
                            output=tmp_path / "local")  # fmt: skip
    assert result.to_completion()["matched_count"] == local.matched_count
    assert result.metadata.engine == "ray"


def test_read_plans_cover_every_row_group_once(tmp_path: Path) -> None:
    import pyarrow as pa

    from kalla.distributed._tasks import plan_reads

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(10_000))}), path, row_group_size=700)
    reads = plan_reads([str(path)], chunk_rows=2_000, predicate=None)
    groups = [rg for r in reads for rg in r.row_groups]
    assert groups == list(range(pq.ParquetFile(path).metadata.num_row_groups))
    assert all(len(r.row_groups) == 3 for r in reads[:-1])  # 3 x 700 >= 2000


def test_map_tasks_read_parquet_sources_themselves(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kalla.distributed import _run

    data = generate("one_to_one", 3000, tmp_path / "data", seed=4, fmt="parquet")
    raw = yaml.safe_load(data.recipe.read_text())
    raw["sources"]["left"]["filters"] = [
        {"column": "currency", "op": "in", "value": ["USD", "EUR"]}
    ]
    request = _request(raw, data.directory)

    def no_driver_chunks(self: Any, engine: Any, side: Any) -> Any:
        raise AssertionError("the driver sent rows of a Parquet source")

    local = run_job(request, tmp_path / "local")
    monkeypatch.setattr(_run._RayRun, "_chunks", no_driver_chunks)
    ray_result = run_job(
        request, tmp_path / "ray", engine="ray",
        ray_options=RayOptions(address=ray_cluster, partitions=3, chunk_rows=500),
    )  # fmt: skip
    keys = {s.value: request.keys(s) for s in kalla.Side}
    assert _answer(ray_result, keys) == _answer(local, keys)
    assert local.metadata.counts["left"].records < 3000  # the filter applied


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def test_reduce_tasks_write_evidence_as_one_dataset_of_part_files(
    ray_cluster: str, tmp_path: Path
) -> None:
    from kalla import Engine, EvidenceStore

    data = generate("batch", 1500, tmp_path / "data", seed=3)
    raw = yaml.safe_load(data.recipe.read_text())
    results = {}
    for engine in ("local", "ray"):
        recipe = kalla.Recipe.from_dict(raw, base_dir=data.directory)
        results[engine] = kalla.reconcile(
            recipe, output=tmp_path / engine, engine=engine, ray_address=ray_cluster
        )
    local, ray_run = results["local"], results["ray"]
    stores = {e: EvidenceStore(tmp_path / e) for e in results}
    for name in ("matched", "unmatched_left", "unmatched_right"):
        path = Path(getattr(ray_run.output_paths, name))
        parts = sorted(p.name for p in path.iterdir())
        assert path.is_dir() and parts and all(p.startswith("part-") for p in parts), parts
        assert _schema(str(path)) == _schema(getattr(local.output_paths, name))
        expected = pq.read_table(getattr(local.output_paths, name))
        assert _rows(pq.read_table(path)) == _rows(expected)
        with Engine() as engine:  # DataFusion reads the folder as one table too
            engine.register_uri("evidence", str(path))
            assert engine.sql("SELECT count(*) AS n FROM evidence").column("n")[0].as_py() == (
                expected.num_rows
            )
    store = stores["ray"]
    assert _rows(store.read_matched(ray_run.run_id)) == _rows(
        stores["local"].read_matched(local.run_id)
    )
    for side in kalla.Side:
        assert _rows(store.read_unmatched(ray_run.run_id, side)) == _rows(
            stores["local"].read_unmatched(local.run_id, side)
        )
    meta, expected_meta = store.metadata(ray_run.run_id), stores["local"].metadata(local.run_id)
    fields = ("matched_count", "matched_rows", "unmatched_left_count", "unmatched_right_count")
    assert [getattr(meta, f) for f in fields] == [getattr(expected_meta, f) for f in fields]
    assert meta.counts == expected_meta.counts


@pytest.mark.parametrize("case", ["composite", "no_equality"])
def test_off_this_host_the_driver_writes_single_files(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from kalla.distributed import _run

    ws = Workspace(tmp_path)
    ws.write("left.csv", _LEFT)
    ws.write("right.csv", _RIGHT)
    request = _request(ws.recipe(EDGE_SQL[case]))
    monkeypatch.setattr(_run, "_one_host", lambda: False)  # as if the workers were elsewhere
    local, distributed = _both(request, tmp_path, ray_cluster)
    assert distributed == local
    for name in ("matched.parquet", "unmatched_left.parquet", "unmatched_right.parquet"):
        assert (tmp_path / "ray" / name).is_file()


def test_a_reduce_task_run_again_replaces_its_part_files(tmp_path: Path) -> None:
    from kalla.distributed._tasks import BucketResult, PartTarget, finish_parts, write_parts

    schema = pa.schema([pa.field("k", pa.int64())])
    folders = {name: tmp_path / name for name in ("matched", "left", "right")}
    for folder in folders.values():
        folder.mkdir()
    target = PartTarget(
        folders={n: str(f) for n, f in folders.items()}, schemas=dict.fromkeys(folders, schema)
    )

    def bucket() -> BucketResult:
        return BucketResult(
            matched=pa.table({"k": pa.array([1, 2], pa.int32())}),  # cast to the dataset's schema
            unmatched={kalla.Side.LEFT: pa.table({"k": [3]}), kalla.Side.RIGHT: schema.empty_table()},
            matched_keys=None, pairs=2, rows={"matched": 2, "left": 1, "right": 0},
        )  # fmt: skip

    # The first attempt was killed while writing: its temporary file is all that is left.
    (folders["left"] / ".part-00004.parquet.0123456789ab.tmp").write_bytes(b"PAR1 half a part")
    write_parts(bucket(), target, 4)
    again = write_parts(bucket(), target, 4)  # Ray ran the task once more
    assert again.matched.num_rows == 0 and again.rows == {"matched": 2, "left": 1, "right": 0}
    finish_parts(target)
    assert [p.name for p in folders["matched"].iterdir()] == ["part-00004.parquet"]
    assert [p.name for p in folders["left"].iterdir()] == ["part-00004.parquet"]
    assert [p.name for p in folders["right"].iterdir()] == ["part-empty.parquet"]
    assert pq.read_table(folders["matched"]).column("k").to_pylist() == [1, 2]
    assert pq.read_table(folders["left"]).column("k").to_pylist() == [3]
    assert pq.read_table(folders["right"]).schema.remove_metadata() == schema


def _fails() -> None:
    raise ValueError("this bucket failed")


def _runs_until_cancelled() -> None:
    for _ in range(60_000):  # a long bucket; checks for cancellation between steps
        time.sleep(0.01)


def test_a_failed_task_cancels_the_tasks_still_running(ray_cluster: str) -> None:
    """A run that has failed does not keep the cluster busy with buckets nobody will read."""
    import ray

    from kalla.distributed import connect
    from kalla.distributed._run import as_completed

    connect(ray_cluster)
    slow = ray.remote(num_cpus=0, max_retries=0)(_runs_until_cancelled).remote()
    failing = ray.remote(num_cpus=0, max_retries=0)(_fails).remote()
    with pytest.raises(ray.exceptions.RayTaskError, match="this bucket failed"):
        list(as_completed([slow, failing]))
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(slow, timeout=120)
