"""The evidence store (the seed's ``EvidenceStore``): read and write run folders under a root.

A root holds one folder per run, ``{root}/runs/{run_id}/``, with ``matched.parquet``,
``unmatched_left.parquet``, ``unmatched_right.parquet`` (``suggested.parquet`` when rules
suggested pairs) and ``metadata.json``. The root is a local folder or ``s3://bucket/prefix``.
Each dataset is one Parquet file, or a folder of part files with one schema (runs of the
Ray engine); the readers here return either as one table.

Writing goes through the engine's own atomic publisher, :class:`RunWriter`: files are
written into a hidden folder that is renamed into place with ``metadata.json`` last, so a
reader never sees half a run, and a completed run is never overwritten. On S3 the run is
published locally first and uploaded with ``metadata.json`` last
(:func:`kalla.connectors.s3.upload_run`); readers list runs by their ``metadata.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from ..errors import (
    EvidenceExists,
    EvidenceWriteFailed,
    JobInvalid,
    KallaError,
    RunNotFound,
    SourceNotFound,
)
from ..side import Side
from ._models import MATCHED, METADATA, SUGGESTED, UNMATCHED, RunMetadata, RunStatus
from ._store import RunWriter, dataset_rows, is_part_name

if TYPE_CHECKING:
    from ..connectors.s3 import S3Settings

__all__ = ["EvidenceRun", "EvidenceStore"]

RUNS = "runs"
#: What the writer accepts: a table, a reader, or batches (``schema`` needed when empty).
ArrowData: TypeAlias = "pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch]"


def _run_id(run_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    except ValueError:
        raise RunNotFound(f"{run_id!r} is not a run id (a UUID)") from None


class EvidenceStore:
    """Runs under one evidence root: list them, read them as Arrow, write new ones.

    Args:
        root: A local folder, or ``s3://bucket/prefix``.
        s3_settings: For an S3 root, where and as whom to reach it (a
            :class:`kalla.connectors.s3.S3Settings` or a dict); default: ``AWS_*``.

    Examples:
        >>> import tempfile
        >>> import pyarrow as pa
        >>> from kalla import EvidenceStore, Side
        >>> store = EvidenceStore(tempfile.mkdtemp())
        >>> with store.init_run(match_sql="SELECT …") as run:
        ...     _ = run.write_matched(pa.table({"invoice": ["A"], "payment": ["P1"]}))
        ...     _ = run.write_unmatched(Side.LEFT, pa.table({"invoice": ["B"]}))
        ...     _ = run.write_unmatched(Side.RIGHT, pa.table({"payment": ["P9"]}))
        ...     meta = run.publish()
        >>> store.latest_run() == meta, meta.matched_count, meta.unmatched_left_count
        (True, 1, 1)
        >>> store.read_unmatched(meta.run_id, Side.RIGHT).to_pylist()
        [{'payment': 'P9'}]
    """

    def __init__(
        self, root: str | Path, *, s3_settings: S3Settings | Mapping[str, Any] | None = None
    ) -> None:
        text = str(root)
        self._s3: _S3Root | None = None
        if text.startswith("s3://"):
            self._s3 = _S3Root(text, s3_settings)
            self.root = text.rstrip("/")
        else:
            self.root = str(Path(root).expanduser().absolute())

    def __repr__(self) -> str:
        return f"EvidenceStore({self.root!r})"

    # --- reading ----------------------------------------------------------------------------

    def run_path(self, run_id: uuid.UUID | str) -> str:
        """Where run ``run_id``'s folder is (a local path or an ``s3://`` URL)."""
        return f"{self.root}/{RUNS}/{_run_id(run_id)}"

    def list_runs(self) -> list[RunMetadata]:
        """Every published run (completed or failed), oldest first (by start time).

        Runs still being written are invisible: they have no ``metadata.json`` yet.
        """
        texts = self._s3.metadata_texts() if self._s3 else self._local_metadata_texts()
        runs = []
        for text in texts:
            try:
                runs.append(RunMetadata.model_validate_json(text))
            except ValidationError:
                continue  # not a kalla run folder (or a newer format): not ours to judge
        return sorted(runs, key=lambda m: (m.started_at, m.completed_at, str(m.run_id)))

    def latest_run(self, *, include_failed: bool = False) -> RunMetadata | None:
        """The most recently completed run (``None`` when there is none)."""
        runs = [m for m in self.list_runs() if include_failed or m.status is RunStatus.COMPLETED]
        return max(runs, key=lambda m: (m.completed_at, m.started_at)) if runs else None

    def metadata(self, run_id: uuid.UUID | str) -> RunMetadata:
        """The ``metadata.json`` of run ``run_id``.

        Raises:
            RunNotFound: No run with this id is published under the root.
        """
        rid = _run_id(run_id)
        try:
            text = self._read_bytes(f"{RUNS}/{rid}/{METADATA}")
        except SourceNotFound:
            raise RunNotFound(f"no run {rid} is published under {self.root}") from None
        return RunMetadata.model_validate_json(text)

    def read_matched(self, run_id: uuid.UUID | str, columns: list[str] | None = None) -> pa.Table:
        """The matched pairs of a completed run (``matched.parquet``, a file or a folder of
        part files)."""
        return self._read_table(run_id, MATCHED, columns)

    def read_unmatched(
        self, run_id: uuid.UUID | str, side: Side, columns: list[str] | None = None
    ) -> pa.Table:
        """The unmatched records of one side of a completed run.

        Raises:
            TypeError: ``side`` is not a :class:`~kalla.Side` (seed D3: no ``"LEFT"``).
        """
        if not isinstance(side, Side):
            raise TypeError(f"side must be Side.LEFT or Side.RIGHT, not {side!r}")
        return self._read_table(run_id, UNMATCHED[side.value], columns)

    def read_suggested(
        self, run_id: uuid.UUID | str, columns: list[str] | None = None
    ) -> pa.Table | None:
        """Pairs suggest-mode rules proposed, or ``None`` when the run has none."""
        try:
            return self._read_table(run_id, SUGGESTED, columns)
        except RunNotFound:
            self.metadata(run_id)  # an unknown run is still an error
            return None

    def _read_table(
        self, run_id: uuid.UUID | str, name: str, columns: list[str] | None
    ) -> pa.Table:
        rid = _run_id(run_id)
        key = f"{RUNS}/{rid}/{name}"
        try:
            if self._s3:
                return self._s3.read_table(key, columns)
            return pq.read_table(Path(self.root) / key, columns=columns)
        except (SourceNotFound, FileNotFoundError):
            raise RunNotFound(
                f"run {rid} under {self.root} has no {name} (unknown run, failed run, or "
                "a dataset this run did not write)"
            ) from None

    def _read_bytes(self, key: str) -> bytes:
        if self._s3:
            return self._s3.read(key)
        try:
            return (Path(self.root) / key).read_bytes()
        except FileNotFoundError:
            raise SourceNotFound(f"{self.root}/{key} does not exist") from None

    def _local_metadata_texts(self) -> list[str]:
        runs = Path(self.root) / RUNS
        if not runs.is_dir():
            return []
        out = []
        for folder in sorted(runs.iterdir()):
            path = folder / METADATA
            if not folder.name.startswith(".") and path.is_file():
                out.append(path.read_text(encoding="utf-8"))
        return out

    # --- writing ----------------------------------------------------------------------------

    def init_run(
        self,
        run_id: uuid.UUID | str | None = None,
        *,
        match_sql: str = "",
        recipe_id: str | None = None,
    ) -> EvidenceRun:
        """Start writing a run: nothing is visible until :meth:`EvidenceRun.publish`.

        Raises:
            EvidenceExists: A completed run with this id is already published.
        """
        rid = _run_id(run_id) if run_id is not None else uuid.uuid4()
        return EvidenceRun(self, rid, match_sql=match_sql, recipe_id=recipe_id)


class EvidenceRun:
    """One run being written (the seed's ``init_run`` … ``update_metadata``), atomically.

    Use it as a context manager: leaving the block without :meth:`publish` (or with an
    exception) discards everything written.
    """

    def __init__(
        self, store: EvidenceStore, run_id: uuid.UUID, *, match_sql: str, recipe_id: str | None
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._tmp: Path | None = None
        if store._s3 is not None:
            store._s3.refuse_completed(run_id)
            self._tmp = Path(tempfile.mkdtemp(prefix="kalla-evidence-"))
            run_dir = self._tmp / RUNS / str(run_id)
        else:
            run_dir = Path(store.root) / RUNS / str(run_id)
        self._writer = RunWriter(run_dir)
        self._fields: dict[str, Any] = {
            "run_id": run_id,
            "recipe_id": recipe_id,
            "match_sql": match_sql,
            "started_at": datetime.now(UTC),
            "sources": {},
        }
        self._written: set[str] = set()
        self._published: RunMetadata | None = None

    def __enter__(self) -> EvidenceRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._published is None:
            self.discard()

    # --- data -------------------------------------------------------------------------------

    def write_matched(self, data: ArrowData, *, schema: pa.Schema | None = None) -> str:
        """Write ``matched.parquet`` (streamed; batches are not held). Returns its final path."""
        return self._write(self._writer.matched_path(), data, schema)

    def write_unmatched(
        self, side: Side, data: ArrowData, *, schema: pa.Schema | None = None
    ) -> str:
        """Write one side's ``unmatched_<side>.parquet``. Returns its final path.

        Raises:
            TypeError: ``side`` is not a :class:`~kalla.Side`.
        """
        if not isinstance(side, Side):
            raise TypeError(f"side must be Side.LEFT or Side.RIGHT, not {side!r}")
        return self._write(self._writer.unmatched_path(side), data, schema)

    def write_suggested(self, data: ArrowData, *, schema: pa.Schema | None = None) -> str:
        """Write ``suggested.parquet`` (pairs for review). Returns its final path."""
        return self._write(self._writer.suggested_path(), data, schema)

    def _write(self, path: Path, data: ArrowData, schema: pa.Schema | None) -> str:
        self._check_open()
        try:
            if isinstance(data, pa.Table):
                pq.write_table(data, path, compression="zstd")
            else:
                batches: Iterator[pa.RecordBatch] = iter(data)
                first = next(batches, None)
                target = schema or (first.schema if first is not None else None)
                if target is None:
                    raise JobInvalid(f"{path.name}: no batches and no schema to write")
                with pq.ParquetWriter(path, target, compression="zstd") as out:
                    if first is not None:
                        out.write_batch(first)
                    for batch in batches:
                        out.write_batch(batch)
        except OSError as exc:
            raise EvidenceWriteFailed(f"cannot write {path.name}: {exc.strerror or exc}") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EvidenceWriteFailed(f"cannot write {path.name}: {exc}") from None
        self._written.add(path.name)
        return f"{self.store.run_path(self.run_id)}/{path.name}"

    # --- metadata and publishing ------------------------------------------------------------

    def update_metadata(self, **fields: Any) -> None:
        """Set fields of the run's ``metadata.json`` (any :class:`RunMetadata` field but
        ``run_id``, ``status``, ``kalla_version``), validated when the run is published.

        Counts left unset are taken from the files: ``matched_rows`` and
        ``matched_count`` from ``matched.parquet``, ``unmatched_<side>_count`` from each
        side's file.
        """
        self._check_open()
        bad = sorted(
            k for k in fields
            if k not in RunMetadata.model_fields or k in ("run_id", "status", "kalla_version")
        )  # fmt: skip
        if bad:
            raise JobInvalid(f"update_metadata: cannot set {bad}")
        self._fields.update(fields)

    def publish(self) -> RunMetadata:
        """Publish the run as completed: ``metadata.json`` last, one rename (then upload).

        Raises:
            EvidenceWriteFailed: A dataset is missing, or writing failed.
            EvidenceExists: A completed run with this id appeared meanwhile.
            JobInvalid: The metadata set with :meth:`update_metadata` is invalid.
        """
        self._check_open()
        required = [MATCHED, *UNMATCHED.values()]
        missing = [n for n in required if n not in self._written]
        if missing:
            raise EvidenceWriteFailed(
                f"run {self.run_id}: a completed run needs {missing}; write them first"
            )
        counts = {
            "matched_rows": dataset_rows(self._writer.matched_path()),
            "unmatched_left_count": dataset_rows(self._writer.unmatched_path(Side.LEFT)),
            "unmatched_right_count": dataset_rows(self._writer.unmatched_path(Side.RIGHT)),
        }
        counts["matched_count"] = counts["matched_rows"]
        return self._publish(RunStatus.COMPLETED, {**counts, **_set(self._fields)})

    def fail(self, error: KallaError) -> RunMetadata:
        """Publish the run as failed, with ``error``; its datasets are dropped."""
        self._check_open()
        return self._publish(RunStatus.FAILED, {**self._fields, "error": error.to_dict()})

    def _publish(self, status: RunStatus, fields: dict[str, Any]) -> RunMetadata:
        from .. import __version__

        try:
            meta = RunMetadata.model_validate(
                {
                    "completed_at": datetime.now(UTC),
                    **fields,
                    "status": status,
                    "kalla_version": __version__,
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise JobInvalid(f"run {self.run_id}: metadata {where}: {first['msg']}") from None
        try:
            run_dir = self._writer.publish(meta)
            if self.store._s3 is not None:
                self.store._s3.upload(run_dir, self.run_id)
        finally:
            self._cleanup()
        self._published = meta
        return meta

    def discard(self) -> None:
        """Drop everything written; nothing is published."""
        if self._published is None:
            self._writer.discard()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _check_open(self) -> None:
        if self._published is not None:
            raise EvidenceExists(f"run {self.run_id} is already published")


def _set(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None or k == "recipe_id"}


class _S3Root:
    """An evidence root on S3: listing, reading and uploading with obstore."""

    def __init__(self, root: str, settings: Any) -> None:
        from ..connectors.s3 import S3Settings, parse_s3_uri

        if settings is None:
            self.settings = S3Settings.from_env()
        elif isinstance(settings, S3Settings):
            self.settings = settings
        else:
            self.settings = S3Settings.model_validate(settings)
        self.loc = parse_s3_uri(root if root.endswith("/") else root + "/")
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self.settings.obstore(self.loc.bucket)
        return self._store

    def read(self, key: str) -> bytes:
        import obstore

        from ..connectors.s3 import _store_errors

        with _store_errors(f"cannot read {self.loc.url(self.loc.key + key)}", self.settings):
            return bytes(obstore.get(self.store, self.loc.key + key).bytes())

    def read_table(self, key: str, columns: list[str] | None) -> pa.Table:
        """A dataset: the object ``key``, or else the part files under ``key/``."""
        try:
            return pq.read_table(pa.BufferReader(self.read(key)), columns=columns)
        except SourceNotFound:
            parts = self.part_keys(key + "/")
            if not parts:
                raise
        tables = [pq.read_table(pa.BufferReader(self.read(k)), columns=columns) for k in parts]
        return pa.concat_tables(tables)

    def part_keys(self, prefix: str) -> list[str]:
        """Keys (relative to the root) of the Parquet parts directly under ``prefix``."""
        full = self.loc.key + prefix
        names = [k[len(full) :] for k in self._list(full)]
        return sorted(prefix + n for n in names if "/" not in n and is_part_name(n))

    def _list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a full key, bucket-relative)."""
        import obstore

        from ..connectors.s3 import _store_errors

        with _store_errors(f"cannot list {self.loc.url(prefix)}", self.settings):
            return [
                m["path"]
                for chunk in obstore.list(self.store, prefix=prefix, chunk_size=1000)
                for m in chunk
            ]

    def metadata_texts(self) -> list[str]:
        prefix = self.loc.key + RUNS + "/"
        keys = self._list(prefix)
        out = []
        for key in keys:
            rest = key[len(prefix) :].split("/")
            if len(rest) == 2 and rest[1] == METADATA and not rest[0].startswith("."):
                try:
                    out.append(self.read(key[len(self.loc.key) :]).decode("utf-8"))
                except SourceNotFound:
                    continue  # deleted between listing and reading
        return out

    def refuse_completed(self, run_id: uuid.UUID) -> None:
        try:
            status = json.loads(self.read(f"{RUNS}/{run_id}/{METADATA}")).get("status")
        except SourceNotFound:
            return
        except ValueError:
            return
        if status == RunStatus.COMPLETED.value:
            raise EvidenceExists(
                f"run {run_id} is already published at {self.loc.url(self.loc.key)}{RUNS}/"
                f"{run_id}/; use a new run_id"
            )

    def upload(self, run_dir: Path, run_id: uuid.UUID) -> None:
        from ..connectors.s3 import upload_run

        self.refuse_completed(run_id)
        upload_run(run_dir, f"{self.loc.url(self.loc.key)}{RUNS}/{run_id}/", self.settings)
