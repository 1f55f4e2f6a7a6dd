"""The work Ray tasks do: bucket a chunk of one side (map), match one bucket pair (reduce).

Both are plain functions over Arrow tables, so they can be tested without Ray; ``_run``
wraps them as remote tasks. Each runs DataFusion through :class:`kalla.engine.Engine`
with one thread: Ray gives each task one CPU, and the parallelism is the buckets.

A reduce task may write its bucket's evidence itself (:func:`write_parts`): one part file
per dataset, ``part-{bucket:05d}.parquet``, written under a hidden temporary name and
renamed into place, so a task Ray runs again replaces its part instead of adding one.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine import Engine
from ..engine._reasons import unmatched_query
from ..engine._rules import RuleOutput, pairs_dataframe
from ..evidence._store import dataset_files
from ..job import Side
from ..rules import single_rule
from ..sql import SideTable, quote
from ._plan import KEY_PREFIX

__all__ = [
    "BucketResult",
    "MapSpec",
    "PartTarget",
    "ReadSpec",
    "ReduceSpec",
    "bucket_chunk",
    "finish_parts",
    "match_bucket",
    "plan_reads",
    "read_chunk",
    "write_part",
    "write_parts",
]

_DIGEST = "__kalla_digest"
_DEAD = "__kalla_dead"
_MATCHED = "__kalla_matched"


@dataclass(frozen=True)
class MapSpec:
    """How to bucket one side's rows."""

    table: str  # the alias match_sql reads
    key_sql: str  # the alias' columns plus __kalla_k0.. (from the plan)
    key_count: int
    primary_key: list[str]
    nulls_match: bool
    buckets: int


def _bucket_sql(spec: MapSpec) -> str:
    """Per row, in row order: a digest of its join keys, and whether it can never match."""
    keys = [quote(f"{KEY_PREFIX}{n}") for n in range(spec.key_count)]
    # Equal keys must give equal text: the plan already cast both sides to a common type.
    text = ", chr(31), ".join(f"coalesce(CAST({k} AS VARCHAR), '')" for k in keys)
    dead = [f"t.{quote(k)} IS NULL" for k in spec.primary_key]
    if not spec.nulls_match:  # NULL = anything is never true: such rows cannot match
        dead += [f"t.{k} IS NULL" for k in keys]
    flags = " OR ".join(dead)
    # BLAKE3: the fastest digest DataFusion has (about 4x md5 here), the same everywhere.
    return (
        f"SELECT digest(concat({text}, ''), 'blake3') AS {_DIGEST}, ({flags}) AS {_DEAD} "
        f"FROM ({spec.key_sql}) t"
    )


def _bucket_numbers(digests: pa.Array, dead: pa.Array, buckets: int) -> pa.Array:
    """Bucket of each row: its digest's first 8 bytes (little-endian) modulo ``buckets``;
    -1 for rows that can never match."""
    fixed = digests.cast(pa.binary(32))
    raw = np.frombuffer(fixed.buffers()[1], dtype=np.uint8).reshape(-1, 32)
    raw = raw[fixed.offset : fixed.offset + len(fixed)]
    numbers = (np.ascontiguousarray(raw[:, :8]).view("<u8").ravel() % buckets).astype(np.int32)
    numbers[dead.to_numpy(zero_copy_only=False)] = -1
    return pa.array(numbers, pa.int32())


def bucket_chunk(spec: MapSpec, chunk: pa.Table) -> list[pa.Table]:
    """Split ``chunk`` into ``[never matchable, bucket 0, …, bucket N-1]``, original columns.

    DataFusion computes the key digests (one partition, so in row order); the rows are
    then grouped by a stable sort on the bucket numbers, which moves each row once.
    """
    with Engine(target_partitions=1) as engine:
        engine.register_arrow(spec.table, chunk, chunk.schema)
        digested = engine.dataframe(_bucket_sql(spec)).to_arrow_table()
    bucket = _bucket_numbers(
        digested.column(_DIGEST).combine_chunks(),
        pc.fill_null(digested.column(_DEAD), False).combine_chunks(),
        spec.buckets,
    )
    if len(bucket) != chunk.num_rows:  # pragma: no cover - a broken invariant, never silent
        raise RuntimeError("bucketing lost rows")
    order = pc.sort_indices(bucket)
    rows = chunk.take(order)
    counts = {int(v["values"]): int(v["counts"]) for v in pc.value_counts(bucket).to_pylist()}
    out: list[pa.Table] = []
    offset = 0
    for b in range(-1, spec.buckets):
        n = counts.get(b, 0)
        out.append(rows.slice(offset, n))
        offset += n
    return out


@dataclass(frozen=True)
class ReadSpec:
    """Row groups of one local Parquet file that a map task reads itself."""

    path: str
    row_groups: list[int]
    predicate: str | None  # the source's filters, as the local run applies them


def plan_reads(paths: list[str], chunk_rows: int, predicate: str | None) -> list[ReadSpec]:
    """Split Parquet files into reads of whole row groups, about ``chunk_rows`` rows each.

    Every row group of every file is in exactly one read.
    """
    import pyarrow.parquet as pq

    reads: list[ReadSpec] = []
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        group: list[int] = []
        rows = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            rows += meta.row_group(rg).num_rows
            if rows >= chunk_rows:
                reads.append(ReadSpec(path, group, predicate))
                group, rows = [], 0
        if group:
            reads.append(ReadSpec(path, group, predicate))
    return reads


def read_chunk(read: ReadSpec, schema: pa.Schema) -> pa.Table:
    """A map task's own input: its row groups, filtered as the local run filters the source."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(read.path).read_row_groups(read.row_groups)
    if read.predicate:
        with Engine(target_partitions=1) as engine:
            engine.register_arrow("__kalla_raw", table, table.schema)
            table = engine.dataframe(
                f"SELECT * FROM __kalla_raw WHERE {read.predicate}"
            ).to_arrow_table()
    return _plain(table).cast(schema)


@dataclass(frozen=True)
class PartTarget:
    """Where reduce tasks write their evidence as part files, and the one schema of each.

    Keys are the datasets: ``"matched"``, ``"left"``, ``"right"`` (unmatched records).
    Folders are absolute paths in the run's unpublished folder, created by the driver.
    """

    folders: dict[str, str]
    schemas: dict[str, pa.Schema]


@dataclass(frozen=True)
class ReduceSpec:
    """How to match one bucket pair."""

    sql: str  # the rewritten match_sql
    tables: dict[Side, str]
    match_sql: str  # as the user wrote it: near misses are derived from it
    primary_keys: dict[Side, list[str]]
    schemas: dict[Side, pa.Schema]
    broadcast: Side | None = None  # that side's matched keys come back instead of its unmatched
    explain: bool = True  # add the reason columns to unmatched records
    parts: PartTarget | None = None  # write the evidence as part files instead of returning it


@dataclass
class BucketResult:
    """One bucket's evidence: matched rows, unmatched records, distinct pairs.

    ``rows`` counts each dataset's rows (``"matched"``, ``"left"``, ``"right"``; the
    broadcast side's unmatched records are not a bucket's to say). Once the bucket is
    written as part files (:func:`write_parts`) the tables are empty and ``rows`` remains.
    """

    matched: pa.Table
    unmatched: dict[Side, pa.Table]
    matched_keys: pa.Table | None
    pairs: int
    rows: dict[str, int] = dataclasses.field(default_factory=dict)


def match_bucket(spec: ReduceSpec, parts: dict[Side, list[pa.Table]]) -> BucketResult:
    """Run ``match_sql`` on one bucket pair and compute what in it matched and what did not.

    A record's candidates share its join keys, so they are in its bucket: the unmatched
    records' reasons and closest candidates come out exactly as in a local run.
    """
    sides = {
        side: SideTable(
            alias=spec.tables[side], keys=spec.primary_keys[side],
            columns={f.name: f.type for f in spec.schemas[side]},
        )
        for side in Side
    }  # fmt: skip
    rule = single_rule(spec.match_sql)
    with Engine(target_partitions=1) as engine, tempfile.TemporaryDirectory() as scratch:
        records: dict[Side, str] = {}
        for side in Side:
            records[side] = f"__kalla_part_{side.value}"
            engine.register_arrow(records[side], _concat(parts[side], spec.schemas[side]))
            not_null = " AND ".join(f"{quote(k)} IS NOT NULL" for k in spec.primary_keys[side])
            engine.register_filtered(spec.tables[side], records[side], not_null)
        matched = _plain(pairs_dataframe(engine, spec.sql, rule.name).to_arrow_table())
        engine.register_arrow(_MATCHED, matched, matched.schema)
        pairs = int(
            engine.scalar(
                f"SELECT count(*) FROM (SELECT DISTINCT left_key, right_key FROM {_MATCHED})"
            )
            or 0
        )
        unmatched: dict[Side, pa.Table] = {}
        matched_keys = None
        for side in Side:
            if side is spec.broadcast:
                matched_keys = engine.dataframe(
                    f"SELECT DISTINCT {side.value}_key FROM {_MATCHED}"
                ).to_arrow_table()
                continue
            query = unmatched_query(
                engine, side, records=records, matched=_MATCHED, rules=[rule],
                outputs=[RuleOutput(Path(scratch))], sides=sides, suggested=None, scratch=Path(scratch),
                explain=spec.explain,
            )  # fmt: skip
            unmatched[side] = _plain(engine.dataframe(query).to_arrow_table())
    rows = {"matched": matched.num_rows, **{s.value: t.num_rows for s, t in unmatched.items()}}
    return BucketResult(
        matched=matched, unmatched=unmatched, matched_keys=matched_keys, pairs=pairs, rows=rows
    )


def write_part(table: pa.Table, folder: str | Path, name: str, schema: pa.Schema) -> None:
    """Write ``table`` as ``folder/name`` with exactly ``schema``, atomically.

    The file is written under a hidden temporary name (which readers skip) and renamed
    over ``name``: a reader, or a retried task, never sees half a part. The folder must
    exist: a task still running after its run was given up cannot recreate it.
    """
    import pyarrow.parquet as pq

    final = Path(folder) / name
    tmp = final.with_name(f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            pq.write_table(table.cast(schema), fh, compression="zstd")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parts(result: BucketResult, target: PartTarget, bucket: int) -> BucketResult:
    """Write a bucket's non-empty datasets as ``part-{bucket:05d}.parquet`` files; return
    the result without its tables (their row counts stay in ``rows``)."""
    tables = {"matched": result.matched, **{s.value: t for s, t in result.unmatched.items()}}
    part = f"part-{bucket:05d}.parquet"
    for name, table in tables.items():
        if table.num_rows:
            write_part(table, target.folders[name], part, target.schemas[name])
    return dataclasses.replace(
        result,
        matched=result.matched.schema.empty_table(),
        unmatched={s: t.schema.empty_table() for s, t in result.unmatched.items()},
    )


def finish_parts(target: PartTarget) -> None:
    """After every task is done: drop temporary files a killed task left behind, and give
    a dataset with no part one empty part, so that it still reads with its schema."""
    for name, folder in target.folders.items():
        path, schema = Path(folder), target.schemas[name]
        for leftover in path.glob(".part-*.tmp"):
            leftover.unlink(missing_ok=True)
        if not dataset_files(path):
            write_part(schema.empty_table(), path, "part-empty.parquet", schema)


def _plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_plain_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(t.value_field.with_type(_plain_type(t.value_type)))
    return t


def _plain(table: pa.Table) -> pa.Table:
    """Without string views: Ray's Arrow serialisation cannot carry them."""
    schema = pa.schema([f.with_type(_plain_type(f.type)) for f in table.schema])
    return table if schema == table.schema else table.cast(schema)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables]).combine_chunks()
