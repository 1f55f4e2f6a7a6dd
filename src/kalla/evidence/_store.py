"""Run folders, published atomically: nobody ever reads a partial run.

Files are written into a hidden sibling folder and renamed into place only once
everything (``metadata.json`` last) is on disk. A completed run is never
overwritten; a failed one may be replaced by a new attempt with the same run_id.

Each dataset (``matched.parquet``, …) is one Parquet file, or a folder of Parquet part
files with one schema (the Ray engine's reduce tasks write their own parts); both read as
one table with ``pyarrow.parquet.read_table`` or DataFusion, and :func:`dataset_files`
lists either.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from ..errors import EvidenceExists, EvidenceWriteFailed
from ..job import Side
from ._models import MATCHED, METADATA, SUGGESTED, UNMATCHED, OutputPaths, RunMetadata, RunStatus

__all__ = ["RunWriter", "dataset_files", "dataset_rows", "is_part_name", "read_metadata"]


def is_part_name(name: str) -> bool:
    """Whether ``name`` in a dataset folder is a part: ``*.parquet``, not hidden (``.``/``_``
    names are skipped, as pyarrow does, so a part being written is never read)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def dataset_files(path: Path) -> list[Path]:
    """The Parquet files of one dataset: the file itself, or a folder's parts in name order."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if is_part_name(p.name) and p.is_file())


def dataset_rows(path: Path) -> int:
    """Rows of a dataset (a Parquet file or a folder of parts), from the footers: no scan."""
    return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in dataset_files(path))


def read_metadata(run_dir: Path) -> RunMetadata | None:
    """The metadata of a published run, or ``None`` when there is none."""
    path = run_dir / METADATA
    if not path.is_file():
        return None
    return RunMetadata.model_validate_json(path.read_text(encoding="utf-8"))


class RunWriter:
    """Writes one run's evidence into a temporary folder and publishes it by rename."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir).absolute()
        existing = _status(self.run_dir)
        if existing is RunStatus.COMPLETED:
            raise EvidenceExists(
                f"run {self.run_dir.name} is already published at {str(self.run_dir)!r}; "
                "use a new run_id",
                run_dir=str(self.run_dir),
            )
        try:
            self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.run_dir.parent / f".{self.run_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
            self.tmp.mkdir()
        except OSError as exc:
            raise EvidenceWriteFailed(
                f"cannot create the run folder under {str(self.run_dir.parent)!r}: {exc.strerror}"
            ) from None
        self.scratch = self.tmp / "_scratch"
        self.scratch.mkdir()

    def matched_path(self) -> Path:
        return self.tmp / MATCHED

    def unmatched_path(self, side: Side) -> Path:
        return self.tmp / UNMATCHED[side.value]

    def suggested_path(self) -> Path:
        return self.tmp / SUGGESTED

    def output_paths(self, *, suggested: bool = False) -> OutputPaths:
        return OutputPaths(
            matched=str(self.run_dir / MATCHED),
            unmatched_left=str(self.run_dir / UNMATCHED["left"]),
            unmatched_right=str(self.run_dir / UNMATCHED["right"]),
            suggested=str(self.run_dir / SUGGESTED) if suggested else None,
        )

    def publish(self, metadata: RunMetadata) -> Path:
        """Write ``metadata.json`` and move the folder into place in one rename."""
        try:
            shutil.rmtree(self.scratch, ignore_errors=True)
            if metadata.status is RunStatus.FAILED:
                for name in (MATCHED, SUGGESTED, *UNMATCHED.values()):
                    _remove(self.tmp / name)
            _write_json(self.tmp / METADATA, metadata.model_dump_json(indent=2))
            _fsync_dir(self.tmp)
            self._swap_in()
        except OSError as exc:
            self.discard()
            raise EvidenceWriteFailed(
                f"cannot publish run {self.run_dir.name}: {exc.strerror}"
            ) from None
        return self.run_dir

    def _swap_in(self) -> None:
        if _status(self.run_dir) is RunStatus.COMPLETED:
            raise EvidenceExists(f"run {self.run_dir.name} was published by someone else meanwhile")
        if self.run_dir.exists():
            # A failed earlier attempt: move it aside, then rename ours in.
            old = self.run_dir.parent / f".{self.run_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.run_dir, old)
            os.rename(self.tmp, self.run_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.run_dir)
        _fsync_dir(self.run_dir.parent)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _status(run_dir: Path) -> RunStatus | None:
    try:
        meta = json.loads((run_dir / METADATA).read_text(encoding="utf-8"))
        return RunStatus(meta.get("status"))
    except (OSError, ValueError):
        return None if not run_dir.exists() else RunStatus.FAILED


def _remove(path: Path) -> None:
    """Remove a dataset: a file, or a folder of part files."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_json(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
