"""One reconciliation run: stage sources, match, compute unmatched exactly, publish evidence.

Semantics (the heart of kalla):

* a matched pair is one (left record, right record) that ``match_sql`` outputs; the
  rewritten query carries both primary keys as struct columns, so this holds whatever
  the query projects; ``matched_count`` counts distinct pairs;
* unmatched records of a side are its records whose key is in no matched pair: an
  anti-join on the full key against ``matched.parquet`` — never "total minus distinct";
* a record with a NULL in its primary key cannot be told apart from others, so it is
  never offered to ``match_sql`` and is always unmatched (counted in ``null_key_records``);
* duplicate primary keys are an error naming examples.

Results stream from DataFusion into Parquet; nothing big passes through Python lists.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..connectors import (
    ConnectorContext,
    ConnectorRegistry,
    TableSource,
    default_registry,
    redact_uri,
)
from ..errors import (
    DuplicatePrimaryKey,
    ExecutionFailed,
    KallaError,
    PrimaryKeyMissing,
    SchemaMismatch,
    first_failure,
)
from ..evidence import (
    RuleCounts,
    RunMetadata,
    RunResult,
    RunStatus,
    RunWriter,
    SideCounts,
    SourceDescription,
)
from ..job import JobRequest, Side
from ..progress import ProgressEvent, Stage
from ..rules import RuleMode
from ..schema import schema_columns, schema_types
from ..sql import SideTable, quote
from . import _reasons, _rules
from ._errors import translate
from ._session import Engine, parquet_rows

__all__ = ["run_job"]

ProgressFn = Callable[[ProgressEvent], None]
_MATCHED = "__kalla_matched"


def _base(side: Side) -> str:
    return f"__kalla_src_{side.value}"


def _all(side: Side) -> str:
    return f"__kalla_all_{side.value}"


def run_job(
    request: JobRequest,
    run_dir: str | Path,
    *,
    memory_limit: int | None = None,
    progress: ProgressFn | None = None,
    registry: ConnectorRegistry | None = None,
    stage_csv: bool | None = None,
    engine: str = "local",
    ray_options: Any = None,
) -> RunResult:
    """Run ``request`` and publish its evidence atomically in ``run_dir``.

    Local CSV sources are held in memory when they fit well within the memory budget and
    otherwise streamed into Parquet staging files; ``stage_csv`` forces either way.
    ``engine="ray"`` runs the match on a Ray cluster (``ray_options``: a
    :class:`kalla.distributed.RayOptions`), with the same evidence.

    Raises a :class:`~kalla.KallaError` on failure, after publishing a ``metadata.json``
    with status ``failed`` (unless the run folder already holds a completed run).
    """
    if engine == "ray":  # the Ray backend (kalla.distributed) reuses _Run; imported on use
        from ..distributed import run_job_ray

        return run_job_ray(
            request, run_dir, options=ray_options, memory_limit=memory_limit,
            progress=progress, registry=registry, stage_csv=stage_csv,
        )  # fmt: skip
    run = _Run(request, Path(run_dir), memory_limit, progress, registry or default_registry())
    run.stage_csv = stage_csv
    return run.execute()


class _Run:
    def __init__(
        self, request: JobRequest, run_dir: Path, memory_limit: int | None,
        progress: ProgressFn | None, registry: ConnectorRegistry,
    ) -> None:  # fmt: skip
        self.request = request
        self.memory_limit = memory_limit
        self.progress_fn = progress
        # Sources open on two threads; a progress callback is never called by both at once.
        self._progress_lock = threading.Lock()
        self.registry = registry
        self.started = datetime.now(UTC)
        self.durations: dict[str, float] = {}
        self.columns: dict[Side, dict[str, str]] = {}
        # What each side was read from, and the filter SQL applied to it (for the Ray engine).
        self.tables: dict[Side, TableSource] = {}
        self.predicates: dict[Side, str | None] = {}
        self.counts: dict[Side, SideCounts] = {}
        self.rule_counts: list[RuleCounts] = []
        self.outputs: list[_rules.RuleOutput] = []
        self.has_suggestions = False
        self.writer = RunWriter(run_dir)

    # --- helpers ------------------------------------------------------------------------------

    def _progress(self, stage: Stage, progress: float, **kw: Any) -> None:
        if self.progress_fn is None:
            return
        with self._progress_lock, contextlib.suppress(Exception):
            self.progress_fn(ProgressEvent(stage=stage, progress=progress, **kw))

    def _timed(self, stage: str, started: float) -> None:
        self.durations[stage] = round(time.perf_counter() - started, 4)

    def _metadata(self, status: RunStatus, **kw: Any) -> RunMetadata:
        r = self.request
        sources = {}
        for side in Side:
            src = r.source(side)
            sources[side.value] = SourceDescription(
                alias=src.alias,
                uri=redact_uri(src.uri),
                primary_key=r.keys(side),
                filters=[f.model_dump(mode="json") for f in src.filters],
                columns=self.columns.get(side, {}),
            )
        return RunMetadata(
            run_id=r.run_id,
            recipe_id=r.recipe_id,
            status=status,
            started_at=self.started,
            completed_at=datetime.now(UTC),
            durations_s=self.durations,
            match_sql=r.match_sql or "",
            sources=sources,
            counts={s.value: c for s, c in self.counts.items()},
            rules=self.rule_counts,
            kalla_version=__version__,
            **kw,
        )

    # --- the run ------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        try:
            engine = Engine(memory_limit=self.memory_limit, spill_dir=self._spill_dir())
            with engine:
                self._stage(engine)
                matched_count, matched_rows = self._match(engine)
                unmatched = self._unmatched(engine)
        except KallaError as err:
            self._fail(err)
            raise
        except Exception as exc:  # a bug or an untranslated failure: still typed, still recorded
            failure = ExecutionFailed(
                f"unexpected failure: {type(exc).__name__}: {exc}"[:500], stage="matching"
            )
            self._fail(failure)
            raise failure from exc
        t = time.perf_counter()
        self._progress(Stage.PUBLISHING, 0.0)
        meta = self._metadata(
            RunStatus.COMPLETED,
            matched_count=matched_count,
            matched_rows=matched_rows,
            unmatched_left_count=unmatched[Side.LEFT],
            unmatched_right_count=unmatched[Side.RIGHT],
        )
        try:
            self.writer.publish(meta)
        except KallaError as err:
            err.stage = err.stage or Stage.PUBLISHING.value
            raise
        self._timed("publishing", t)
        meta.durations_s = self.durations
        self._progress(Stage.PUBLISHING, 1.0)
        return RunResult(
            run_id=self.request.run_id,
            matched_count=matched_count,
            unmatched_left_count=unmatched[Side.LEFT],
            unmatched_right_count=unmatched[Side.RIGHT],
            output_paths=self.writer.output_paths(suggested=self.has_suggestions),
            run_dir=str(self.writer.run_dir),
            metadata=meta,
        )

    def _spill_dir(self) -> Path | None:
        if self.memory_limit is None:
            return None
        path = self.writer.scratch / "spill"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _fail(self, err: KallaError) -> None:
        try:
            self.writer.publish(self._metadata(RunStatus.FAILED, error=err.to_dict()))
        except KallaError:
            self.writer.discard()

    def _stage(self, engine: Engine) -> None:
        t = time.perf_counter()
        tables = self._open_sources()
        for i, side in enumerate(Side):
            src = self.request.source(side)
            with translate(stage=Stage.STAGING.value, source=src.alias):
                table = tables[side]
                schema = engine.register_source(
                    _base(side), table,
                    declared=schema_types(src.schema_),
                    staging_dir=self._staging_dir(side),
                    in_memory=self._fits_in_memory(engine, table),
                )  # fmt: skip
                self.columns[side] = {f.name: str(f.type) for f in schema}
                self._check_columns(side, schema.names)
                predicate = (
                    None
                    if table.filters_applied
                    else engine.filter_predicate(_base(side), src.filters, src.alias)
                )
                engine.register_filtered(_all(side), _base(side), predicate)
                self.tables[side], self.predicates[side] = table, predicate
                keys = self.request.keys(side)
                not_null = " AND ".join(f"{quote(k)} IS NOT NULL" for k in keys)
                # SQL folds unquoted names to lower case, so that is the name match_sql sees.
                engine.register_filtered(src.alias.lower(), _all(side), not_null)
            self._progress(Stage.STAGING, 0.5 + (i + 1) / 4, source=src.alias)
        for side in Side:
            with translate(stage=Stage.STAGING.value, source=self.request.source(side).alias):
                self._check_duplicates(engine, side)
        self._timed("staging", t)

    stage_csv: bool | None = None

    def _staging_dir(self, side: Side) -> Path:
        return self.writer.scratch / f"staging_{side.value}"

    def _open_sources(self) -> dict[Side, TableSource]:
        """Open both sources at once and return what each connector made scannable.

        A database read is mostly waiting on the server and the network, so reading the
        two sides side by side roughly halves staging when both are remote. When one side
        fails, the other is told to stop (:attr:`ConnectorContext.cancel`); the error
        raised is the first real failure in side order, never the other side's
        :class:`~kalla.errors.Cancelled`.
        """
        cancel = threading.Event()
        done: list[Side] = []

        def open_side(side: Side) -> TableSource:
            src = self.request.source(side)
            self._progress(Stage.STAGING, 0.0, source=src.alias)
            try:
                with translate(stage=Stage.STAGING.value, source=src.alias):
                    connector = self.registry.for_uri(src.uri)
                    ctx = ConnectorContext(staging_dir=self._staging_dir(side), cancel=cancel)
                    table = connector.open(src, ctx)
            except BaseException:
                cancel.set()
                raise
            done.append(side)
            self._progress(Stage.STAGING, len(done) / 4, source=src.alias)
            return table

        with ThreadPoolExecutor(max_workers=len(Side), thread_name_prefix="kalla-open") as pool:
            futures = {side: pool.submit(open_side, side) for side in Side}
            first = first_failure([f.exception() for f in futures.values()])
        if first is not None:
            raise first
        return {side: f.result() for side, f in futures.items()}

    def _fits_in_memory(self, engine: Engine, table: TableSource) -> bool:
        if table.format == "csv" and table.object_store is None and self.stage_csv is not None:
            return not self.stage_csv
        return engine.fits_in_memory(table, staged_under=self.writer.scratch)

    def _check_columns(self, side: Side, names: list[str]) -> None:
        src = self.request.source(side)
        declared = schema_columns(src.schema_)
        missing = [c for c in declared if c not in names]
        if missing:
            raise SchemaMismatch(
                f"source {src.alias!r} is missing column(s) {missing} its schema declares; "
                f"it has {names}",
                missing=missing,
            )
        keys = self.request.keys(side)
        missing = [k for k in keys if k not in names]
        if missing:
            raise PrimaryKeyMissing(
                f"source {src.alias!r} has no primary key column(s) {missing}; it has {names}",
                missing=missing,
            )

    def _check_duplicates(self, engine: Engine, side: Side) -> None:
        src = self.request.source(side)
        keys = self.request.keys(side)
        cols = ", ".join(quote(k) for k in keys)
        dupes = engine.rows(
            f"SELECT {cols}, count(*) AS __kalla_n FROM {quote(src.alias.lower())} GROUP BY {cols} "
            f"HAVING count(*) > 1 ORDER BY __kalla_n DESC, {cols} LIMIT 5"
        )
        if dupes:
            examples = [
                ", ".join(f"{k}={row[k]!s}" for k in keys) + f" ({row['__kalla_n']} records)"
                for row in dupes
            ]
            raise DuplicatePrimaryKey(
                f"source {src.alias!r} has several records with the same primary key {keys}, "
                f"e.g. {'; '.join(examples)}; make the key unique (add columns to primary_key) "
                "or deduplicate the source",
                examples=[{k: str(row[k]) for k in keys} for row in dupes],
            )

    def _sides(self, engine: Engine) -> dict[Side, SideTable]:
        return {
            side: SideTable(
                alias=self.request.source(side).alias.lower(),
                keys=self.request.keys(side),
                columns={f.name: f.type for f in engine.schema(_base(side))},
            )
            for side in Side
        }

    def _match(self, engine: Engine) -> tuple[int, int]:
        """Run the rules as a waterfall; publish auto pairs as matched, suggestions apart."""
        t = time.perf_counter()
        self._progress(Stage.MATCHING, 0.0)
        rules = self.request.effective_rules()
        sides = self._sides(engine)
        auto: list[Path] = []
        suggested: list[Path] = []
        pairs_so_far = 0
        for i, rule in enumerate(rules):
            if i > 0 and auto:
                self._restrict_to_unmatched(engine, auto)
            direct = len(rules) == 1 and rule.mode is RuleMode.AUTO
            out = (
                self.writer.matched_path() if direct else self.writer.scratch / f"rule_{i}.parquet"
            )
            with translate(stage=Stage.MATCHING.value, sql=True):
                output = _rules.run_rule(engine, rule, i, sides, out, self.writer.scratch)
                self.outputs.append(output)
                part = output.part
                counts = _rules.part_counts(
                    engine, part, f"__kalla_part_{i}", rule, records=len(rules) > 1
                )
            self.rule_counts.append(
                RuleCounts(name=rule.name, kind=rule.kind, mode=rule.mode, **counts)
            )
            (auto if rule.mode is RuleMode.AUTO else suggested).append(part)
            if rule.mode is RuleMode.AUTO:
                pairs_so_far += counts["pairs"]
            self._progress(Stage.MATCHING, (i + 1) / len(rules), matched_count=pairs_so_far)
        with translate(stage=Stage.MATCHING.value, sql=True):
            path = self.writer.matched_path()
            if auto != [path]:
                _rules.combine(engine, auto, path, sides)
            if suggested:
                _rules.combine(engine, suggested, self.writer.suggested_path(), sides)
                self.has_suggestions = True
            matched_rows = parquet_rows(path)
            engine.register_file(_MATCHED, path)
        self._timed("matching", t)
        return pairs_so_far, matched_rows

    def _restrict_to_unmatched(self, engine: Engine, parts: list[Path]) -> None:
        """Re-point each alias at its records that no earlier auto rule matched."""
        for side in Side:
            keys = self.request.keys(side)
            key_col = f"{side.value}_key"
            fields = ", ".join(
                f"get_field({key_col}, '{k.replace(chr(39), chr(39) * 2)}') AS {quote(f'k{j}')}"
                for j, k in enumerate(keys)
            )
            consumed = " UNION ALL ".join(
                f"SELECT {fields} FROM {quote(f'__kalla_part_{i}')}" for i in range(len(parts))
            )
            on = " AND ".join(f"s.{quote(k)} = c.{quote(f'k{j}')}" for j, k in enumerate(keys))
            not_null = " AND ".join(f"s.{quote(k)} IS NOT NULL" for k in keys)
            engine.replace_view(
                self.request.source(side).alias.lower(),
                f"SELECT s.* FROM {quote(_all(side))} s LEFT ANTI JOIN ({consumed}) c ON {on} WHERE {not_null}",
            )

    def _unmatched(self, engine: Engine) -> dict[Side, int]:
        t = time.perf_counter()
        out: dict[Side, int] = {}
        rules = self.request.effective_rules()
        sides = self._sides(engine)
        suggested = self.writer.suggested_path() if self.has_suggestions else None
        for i, side in enumerate(Side):
            self._progress(Stage.WRITING_RESULTS, i / 2)
            keys = self.request.keys(side)
            null_check = " OR ".join(f"s.{quote(k)} IS NULL" for k in keys)
            path = self.writer.unmatched_path(side)
            with translate(stage=Stage.WRITING_RESULTS.value):
                query = _reasons.unmatched_query(
                    engine, side, records={s: _all(s) for s in Side}, matched=_MATCHED,
                    rules=rules, outputs=self.outputs, sides=sides,
                    suggested=suggested, scratch=self.writer.scratch,
                    explain=self.request.explain_unmatched,
                )  # fmt: skip
                engine.write_parquet(engine.dataframe(query), path)
                unmatched = parquet_rows(path)
                row = engine.rows(
                    f"SELECT count(*) AS n, count(*) FILTER (WHERE {null_check}) AS nulls FROM {quote(_all(side))} s"
                )[0]
            records = int(row["n"])
            self.counts[side] = SideCounts(
                records=records,
                matched_records=records - unmatched,
                unmatched_records=unmatched,
                null_key_records=int(row["nulls"]),
            )
            out[side] = unmatched
            for rc in self.rule_counts:
                if getattr(rc, f"{side.value}_records") < 0:  # the single rule: all its records
                    setattr(rc, f"{side.value}_records", records - unmatched)
        self._timed("writing_results", t)
        self._progress(Stage.WRITING_RESULTS, 1.0)
        return out
