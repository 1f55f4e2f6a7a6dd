"""A reconciliation run on Ray: the local run's staging and checks, matching spread over tasks.

The driver stages the sources exactly as a local run does (same connectors, filters, type
inference, global duplicate-key check), then streams each side in chunks into Ray's
object store. In HASH mode map tasks bucket the chunks by the join keys and one reduce
task per bucket runs ``match_sql`` on its bucket pair; in BROADCAST / SINGLE mode the
larger side's chunks are the buckets and the smaller side goes to every task.

When every Ray node runs on this machine, each reduce task writes its bucket's evidence
itself, as part files in the run's unpublished folder, so ``matched.parquet`` and the
unmatched datasets are folders of parts and the driver only adds up counts. Otherwise the
driver writes each bucket's results into single files as they arrive, holding one bucket
at a time. Ray retries a task whose worker dies and rebuilds lost map outputs; a retried
reduce task replaces its part files (see :func:`._tasks.write_parts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..connectors import ConnectorRegistry, TableSource, default_registry
from ..engine import Engine
from ..engine._reasons import never_offered, reason_fields, unmatched_query
from ..engine._reconcile import ProgressFn, _all, _Run
from ..engine._rules import RuleOutput, pairs_dataframe
from ..engine._session import parquet_rows
from ..errors import BroadcastTooLarge, ExecutionFailed, KallaError, MatchSqlUnsupported
from ..evidence import RunResult, RunStatus, SideCounts
from ..job import JobRequest, Side
from ..progress import Stage
from ..rules import single_rule
from ..sql import SideTable, plan_match, quote
from ._cluster import connect
from ._options import RayOptions
from ._plan import JoinPlan, Mode, plan_join
from ._tasks import (
    BucketResult,
    MapSpec,
    PartTarget,
    ReadSpec,
    ReduceSpec,
    bucket_chunk,
    finish_parts,
    match_bucket,
    plan_reads,
    read_chunk,
    write_parts,
)

__all__ = ["run_job_ray"]

_RETRIES = 3
#: Part files the driver itself writes, next to the reduce tasks' ``part-NNNNN.parquet``.
_NEVER_OFFERED_PART = "part-never-offered.parquet"
_BROADCAST_PART = "part-broadcast.parquet"


def run_job_ray(
    request: JobRequest,
    run_dir: str | Path,
    *,
    options: RayOptions | None = None,
    memory_limit: int | None = None,
    progress: ProgressFn | None = None,
    registry: ConnectorRegistry | None = None,
    stage_csv: bool | None = None,
) -> RunResult:
    """Run ``request`` on the Ray cluster and publish evidence like :func:`kalla.engine.run_job`.

    Connects first (once per process): an unreachable cluster fails before anything is
    staged, with :class:`~kalla.errors.ClusterUnavailable`.
    """
    options = options or RayOptions()
    connect(options.address)
    run = _RayRun(request, Path(run_dir), memory_limit, progress, registry or default_registry())
    run.options = options
    run.stage_csv = stage_csv
    return run.execute()


def _remote(fn: Any, **kw: Any) -> Any:
    import ray

    return ray.remote(max_retries=_RETRIES, num_cpus=1, **kw)(fn)


def _map_task(
    spec: MapSpec, chunk: pa.Table | ReadSpec, schema: pa.Schema | None = None
) -> list[pa.Table]:
    if isinstance(chunk, ReadSpec):  # the task reads its own row groups
        assert schema is not None
        chunk = read_chunk(chunk, schema)
    return bucket_chunk(spec, chunk)


def _reduce_task(spec: ReduceSpec, bucket: int, n_left: int, *parts: pa.Table) -> BucketResult:
    result = match_bucket(spec, {Side.LEFT: list(parts[:n_left]), Side.RIGHT: list(parts[n_left:])})
    return result if spec.parts is None else write_parts(result, spec.parts, bucket)


def as_completed(refs: list[Any]) -> Generator[Any, None, None]:
    """Each task's result as soon as it is done. When one fails (or the caller stops), the
    tasks still queued or running are cancelled: a failed run frees the cluster at once
    instead of finishing buckets nobody will read."""
    import ray

    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref)


def _one_host() -> bool:
    """Whether every Ray node runs on this machine, so workers can read the driver's files
    and write into its run folder."""
    import ray

    here = ray.util.get_node_ip_address()
    return all(n["NodeManagerAddress"] == here for n in ray.nodes() if n.get("Alive"))


class _RayRun(_Run):
    options: RayOptions = RayOptions()

    def _metadata(self, status: RunStatus, **kw: Any) -> Any:
        return super()._metadata(status, engine="ray", **kw)

    # --- chunks -------------------------------------------------------------------------------

    def _chunks(self, engine: Engine, side: Side) -> Iterator[pa.Table]:
        """The side's records (after filters) in chunks of about ``chunk_rows`` rows."""
        pending: list[pa.RecordBatch] = []
        rows = 0
        chunks = 0
        schema = engine.schema(_all(side))
        for batch in engine.dataframe(f"SELECT * FROM {quote(_all(side))}").execute_stream():
            rb = batch.to_pyarrow()
            pending.append(rb)
            rows += rb.num_rows
            if rows >= self.options.chunk_rows:
                yield pa.Table.from_batches(pending, schema).cast(schema)
                pending, rows, chunks = [], 0, chunks + 1
        if pending or not chunks:  # an empty side is one empty chunk
            yield pa.Table.from_batches(pending, schema).cast(schema)

    def _reads(self, side: Side) -> list[ReadSpec] | None:
        """Row-group reads for map tasks, when the side is local Parquet files (as staged by a
        database connector, or given); ``None`` when the driver must send the rows."""
        table = self.tables.get(side)
        if table is None or table.format != "parquet" or table.object_store is not None:
            return None
        if not all(Path(p).is_file() for p in table.paths) or not _one_host():
            return None
        reads = plan_reads(table.paths, self.options.chunk_rows, self.predicates.get(side))
        return reads or None

    def _fits_in_memory(self, engine: Engine, table: TableSource) -> bool:
        # Parquet stays on disk: the map tasks read it, not the driver.
        return table.format == "csv" and super()._fits_in_memory(engine, table)

    def _buckets(self) -> int:
        if self.options.partitions is not None:
            return self.options.partitions
        import ray

        return max(2, int(ray.cluster_resources().get("CPU", 1)))

    # --- matching -----------------------------------------------------------------------------

    def _match(self, engine: Engine) -> tuple[int, int]:
        import ray

        t = time.perf_counter()
        self._progress(Stage.MATCHING, 0.0)
        aliases = {s: self.request.source(s).alias.lower() for s in Side}
        schemas = {s: engine.schema(_all(s)) for s in Side}
        sides = {
            s: SideTable(alias=aliases[s], keys=self.request.keys(s),
                         columns={f.name: f.type for f in schemas[s]})
            for s in Side
        }  # fmt: skip
        if self.request.match_sql is None:
            raise MatchSqlUnsupported(
                "the ray engine runs one match_sql per job; rule waterfalls run on the local "
                "engine for now",
                stage="matching",
            )
        sql = plan_match(self.request.match_sql, sides).sql
        plan = plan_join(sql, aliases, schemas)
        spec = ReduceSpec(
            sql=sql, tables=aliases, match_sql=self.request.match_sql,
            explain=self.request.explain_unmatched,
            primary_keys={s: self.request.keys(s) for s in Side}, schemas=schemas,
        )  # fmt: skip
        out_schema = self._matched_schema(engine, sql)
        explain = self.request.explain_unmatched
        unmatched_schemas = {
            s: pa.schema([*schemas[s], *reason_fields(s, sides, explain)]) for s in Side
        }
        self._side_tables = sides
        self._schemas = {"matched": out_schema, **{s.value: unmatched_schemas[s] for s in Side}}
        self._paths = {
            "matched": self.writer.matched_path(),
            **{s.value: self.writer.unmatched_path(s) for s in Side},
        }
        self._parts = self._part_target()
        spec = dataclasses.replace(spec, parts=self._parts)
        self._writers: dict[str, pq.ParquetWriter] = (
            {}
            if self._parts is not None
            else {
                name: pq.ParquetWriter(path, self._schemas[name], compression="zstd")
                for name, path in self._paths.items()
            }
        )
        self._unmatched_rows = {s: 0 for s in Side}
        try:
            if plan.mode is Mode.HASH:
                results = self._hash(engine, plan, spec)
                broadcast: Side | None = None
            else:
                broadcast, results = self._broadcast(engine, plan, spec)
            pairs, rows, keys = self._collect(results, len(results))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), KallaError) else None
            if cause is not None:
                raise cause from None
            raise ExecutionFailed(
                f"a Ray task failed: {str(exc)[-600:]}", stage="matching"
            ) from None
        except ray.exceptions.RayError as exc:
            raise ExecutionFailed(
                f"the Ray cluster failed the run: {type(exc).__name__}: {str(exc)[:300]}",
                stage="matching",
            ) from None
        finally:
            for w in self._writers.values():
                w.close()
        if broadcast is not None:
            self._broadcast_unmatched(engine, broadcast, keys)
        if self._parts is not None:
            self._finish_parts(rows)
        self._timed("matching", t)
        self._progress(Stage.MATCHING, 1.0, matched_count=pairs)
        return pairs, rows

    def _matched_schema(self, engine: Engine, sql: str) -> pa.Schema:
        return pairs_dataframe(engine, sql, "match_sql").schema()

    def _part_target(self) -> PartTarget | None:
        """Folders for the reduce tasks' part files, when they can write into the run folder."""
        if not _one_host():
            return None
        for path in self._paths.values():
            path.mkdir()
        return PartTarget(
            folders={name: str(path) for name, path in self._paths.items()}, schemas=self._schemas
        )

    def _write(self, name: str, table: pa.Table) -> None:
        """Write rows the driver holds: into the single file, or into its own part file."""
        if not table.num_rows:
            return
        writer = self._writers.get(name)
        if writer is None:  # part files: the records never offered to the match
            path = self._paths[name] / _NEVER_OFFERED_PART
            writer = pq.ParquetWriter(path, self._schemas[name], compression="zstd")
            self._writers[name] = writer
        writer.write_table(table.cast(self._schemas[name]))

    def _finish_parts(self, matched_rows: int) -> None:
        """Tidy the part folders, then check they hold exactly the rows the tasks reported."""
        assert self._parts is not None
        finish_parts(self._parts)
        expected = {"matched": matched_rows, **{s.value: self._unmatched_rows[s] for s in Side}}
        found = {name: parquet_rows(path) for name, path in self._paths.items()}
        if found != expected:  # e.g. a worker that wrote somewhere the driver cannot see
            raise ExecutionFailed(
                f"the reduce tasks' part files hold {found} rows, but the tasks reported "
                f"{expected}",
                stage="matching",
            )

    def _hash(self, engine: Engine, plan: JoinPlan, spec: ReduceSpec) -> list[Any]:
        import ray

        n = self._buckets()
        mapper = _remote(_map_task, num_returns=n + 1)
        outputs: dict[Side, list[list[Any]]] = {s: [] for s in Side}
        for side in Side:
            mspec = MapSpec(
                table=spec.tables[side], key_sql=plan.key_sql[side], key_count=plan.key_count,
                primary_key=self.request.keys(side), nulls_match=plan.nulls_match, buckets=n,
            )  # fmt: skip
            reads = self._reads(side)
            if reads is not None:  # map tasks read the files themselves
                schema = engine.schema(_all(side))
                for read in reads:
                    outputs[side].append(mapper.remote(mspec, read, schema))
                continue
            for chunk in self._chunks(engine, side):
                outputs[side].append(mapper.remote(mspec, ray.put(chunk)))
        reducer = _remote(_reduce_task)
        results = []
        for b in range(n):
            left = [refs[b + 1] for refs in outputs[Side.LEFT]]
            right = [refs[b + 1] for refs in outputs[Side.RIGHT]]
            results.append(reducer.remote(spec, b, len(left), *left, *right))
        for side in Side:  # records that can never match go straight to unmatched
            for refs in outputs[side]:
                table = never_offered(
                    ray.get(refs[0]), side, self._side_tables, ["match_sql"],
                    self.request.explain_unmatched,
                )  # fmt: skip
                self._write(side.value, table)
                self._unmatched_rows[side] += table.num_rows
        return results

    def _broadcast(
        self, engine: Engine, plan: JoinPlan, spec: ReduceSpec
    ) -> tuple[Side, list[Any]]:
        import ray

        chunks = {s: [c for c in self._chunks(engine, s) if c.num_rows] for s in Side}
        size = {s: sum(c.nbytes for c in chunks[s]) for s in Side}
        small = Side.LEFT if size[Side.LEFT] <= size[Side.RIGHT] else Side.RIGHT
        big = small.other
        limit = self.options.broadcast_limit
        shipped = size[small] if plan.mode is Mode.BROADCAST else size[small] + size[big]
        if shipped > limit:
            what = (
                f"the {small.value} side ({size[small]:,} bytes) to every task"
                if plan.mode is Mode.BROADCAST
                else f"both sides ({shipped:,} bytes) to one task"
            )
            raise BroadcastTooLarge(
                f"match_sql cannot be hash-partitioned ({plan.reason}), so the ray engine would "
                f"ship {what}, over the limit of {limit:,} bytes; add an equality condition "
                "between the sides (a.key = b.key), raise the broadcast limit, or run locally",
                stage="matching",
            )
        spec = ReduceSpec(**{**spec.__dict__, "broadcast": small})
        small_ref = ray.put(
            pa.concat_tables(chunks[small]) if chunks[small] else spec.schemas[small].empty_table()
        )
        groups = (
            chunks[big]
            if plan.mode is Mode.BROADCAST
            else [pa.concat_tables(chunks[big])]
            if chunks[big]
            else []
        )
        groups = groups or [spec.schemas[big].empty_table()]
        reducer = _remote(_reduce_task)
        results = []
        for b, group in enumerate(groups):
            parts = {big: ray.put(group), small: small_ref}
            results.append(reducer.remote(spec, b, 1, parts[Side.LEFT], parts[Side.RIGHT]))
        return small, results

    def _collect(self, pending: list[Any], total: int) -> tuple[int, int, list[pa.Table]]:
        pairs = rows = 0
        keys: list[pa.Table] = []
        with contextlib.closing(as_completed(pending)) as results:  # closing cancels the rest
            for done, result in enumerate(results, 1):
                self._write("matched", result.matched)  # empty when the task wrote a part file
                rows += result.rows["matched"]
                pairs += result.pairs
                for side, table in result.unmatched.items():
                    self._write(side.value, table)
                    self._unmatched_rows[side] += result.rows[side.value]
                if result.matched_keys is not None:
                    keys.append(result.matched_keys)
                self._progress(Stage.MATCHING, done / total, matched_count=pairs)
        return pairs, rows, keys

    def _broadcast_unmatched(self, engine: Engine, side: Side, keys: list[pa.Table]) -> None:
        """The broadcast side's unmatched records: those in no task's matched keys."""
        name = "__kalla_bcast_keys"
        key_type = pa.struct(
            [pa.field(k, self._side_tables[side].columns[k]) for k in self._side_tables[side].keys]
        )
        schema = pa.schema([pa.field(f"{side.value}_key", key_type)])
        found = [k.cast(schema) for k in keys if k.num_rows]
        engine.register_arrow(
            name, pa.concat_tables(found) if found else schema.empty_table(), schema
        )
        path = self._paths[side.value]
        if self._parts is not None:  # the folder's one part: no task writes this side
            path = path / _BROADCAST_PART
        query = unmatched_query(
            engine, side, records={s: _all(s) for s in Side}, matched=name,
            rules=[single_rule(self.request.match_sql or "")],
            outputs=[RuleOutput(self.writer.scratch)], sides=self._side_tables, suggested=None,
            scratch=self.writer.scratch, explain=self.request.explain_unmatched,
        )  # fmt: skip
        engine.write_parquet(engine.dataframe(query), path)
        self._unmatched_rows[side] = parquet_rows(path)

    # --- counts -------------------------------------------------------------------------------

    def _unmatched(self, engine: Engine) -> dict[Side, int]:
        t = time.perf_counter()
        out: dict[Side, int] = {}
        for side in Side:
            keys = self.request.keys(side)
            null_check = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
            row = engine.rows(
                f"SELECT count(*) AS n, count(*) FILTER (WHERE {null_check}) AS nulls "
                f"FROM {quote(_all(side))}"
            )[0]
            records = int(row["n"])
            unmatched = self._unmatched_rows[side]
            self.counts[side] = SideCounts(
                records=records,
                matched_records=records - unmatched,
                unmatched_records=unmatched,
                null_key_records=int(row["nulls"]),
            )
            out[side] = unmatched
        self._timed("writing_results", t)
        return out
