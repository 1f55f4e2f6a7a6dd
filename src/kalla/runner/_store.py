"""The job store: SQLite in the state dir, the runner's memory across crashes.

A job is written here (committed, fsynced) before ``POST /api/jobs`` answers 202,
and a job's outcome is written in the same transaction as the complete/error
callback it owes (the *outbox*), so neither a job nor its final callback can be
lost between two steps. All access happens on the event-loop thread; SQLite
calls are short, which keeps ordering simple (no locks, no races between the
admission check and the insert).

The stored request holds source URIs as given, credentials included, because a
job re-run after a crash needs them: the file is created readable by its owner
only, and nothing read from it is ever logged or returned unredacted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._models import CallbackKind, CompletionCallback, ErrorCallback, JobState, JobStatus

__all__ = ["JobRecord", "JobStore", "OutboxItem"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL UNIQUE,
    body_hash   TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    run_dir     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    stage       TEXT,
    progress    REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    error       TEXT,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    delivered_at    REAL,
    abandoned       INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, abandoned, next_attempt_at);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class JobRecord:
    """One row of ``jobs``."""

    run_id: str
    body_hash: str
    request: str
    run_dir: str
    state: JobState
    stage: str | None
    progress: float | None
    attempts: int
    result: str | None
    error: str | None
    created_at: float
    updated_at: float

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> JobRecord:
        data = {k: row[k] for k in row.keys() if k != "seq"}  # noqa: SIM118 - sqlite3.Row
        data["state"] = JobState(data["state"])
        return cls(**data)

    def to_status(self) -> JobStatus:
        return JobStatus(
            run_id=self.run_id,  # type: ignore[arg-type]
            state=self.state,
            stage=self.stage,
            progress=self.progress,
            attempts=self.attempts,
            created_at=self.created_at,
            updated_at=self.updated_at,
            result=CompletionCallback.model_validate_json(self.result) if self.result else None,
            error=ErrorCallback.model_validate_json(self.error) if self.error else None,
        )


@dataclass(frozen=True)
class OutboxItem:
    """A complete/error callback owed to a receiver, kept until it is delivered."""

    id: int
    run_id: str
    kind: CallbackKind
    url: str
    payload: str
    attempts: int


class JobStore:
    """The SQLite job store and callback outbox."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            path.touch(mode=0o600)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each write is one transaction.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a 202 means the job is on disk
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        for suffix in ("", "-wal", "-shm"):  # readable by the owner only: it holds credentials
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                os.chmod(companion, 0o600)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- jobs ---------------------------------------------------------------------------------

    def get(self, run_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE run_id = ?", (run_id,)).fetchone()
        return JobRecord._from_row(row) if row else None

    def add(self, run_id: str, body_hash: str, request: str, run_dir: str) -> JobRecord:
        """Record a new queued job (durably, before the caller is told it was accepted)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (run_id, body_hash, request, run_dir, state, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, body_hash, request, run_dir, JobState.QUEUED.value, now, now),
            )
        record = self.get(run_id)
        assert record is not None
        return record

    def counts(self) -> dict[JobState, int]:
        """Jobs per active state (``queued``, ``running``)."""
        rows = self._db.execute(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN (?, ?) GROUP BY state", _ACTIVE
        ).fetchall()
        out = {JobState.QUEUED: 0, JobState.RUNNING: 0}
        out.update({JobState(r["state"]): r["n"] for r in rows})
        return out

    def next_queued(self, limit: int) -> list[JobRecord]:
        """The oldest queued jobs, first come first served."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY seq LIMIT ?",
            (JobState.QUEUED.value, limit),
        ).fetchall()
        return [JobRecord._from_row(r) for r in rows]

    def start(self, run_id: str) -> bool:
        """Queued → running; ``False`` if the job is no longer queued (e.g. cancelled)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, stage = NULL, progress = NULL,"
                " updated_at = ? WHERE run_id = ? AND state = ?",
                (JobState.RUNNING.value, time.time(), run_id, JobState.QUEUED.value),
            )
        return cur.rowcount == 1

    def finish(
        self,
        run_id: str,
        state: JobState,
        outcome: CompletionCallback | ErrorCallback,
        callback_url: str,
        stage: str | None = None,
    ) -> bool:
        """Move an active job to its final state and queue its final callback, atomically.

        Returns ``False`` (and changes nothing) when the job had already finished, so a
        job gets exactly one outcome and one final callback whatever races happen.
        """
        assert state.terminal
        kind = CallbackKind.COMPLETE if state is JobState.COMPLETED else CallbackKind.ERROR
        payload = outcome.model_dump_json()
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET state = ?, {'result' if kind is CallbackKind.COMPLETE else 'error'}"
                " = ?, stage = COALESCE(?, stage), updated_at = ? WHERE run_id = ? AND state IN (?, ?)",
                (state.value, payload, stage, now, run_id, *_ACTIVE),
            )
            if cur.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO outbox (run_id, kind, url, payload, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, kind.value, callback_url, payload, now),
            )
        return True

    def requeue(self, run_id: str | None = None) -> int:
        """Running → queued: for jobs a crash or shutdown interrupted (all when ``run_id`` is None)."""
        sql = "UPDATE jobs SET state = ?, stage = NULL, progress = NULL, updated_at = ? WHERE state = ?"
        args: tuple[Any, ...] = (JobState.QUEUED.value, time.time(), JobState.RUNNING.value)
        if run_id is not None:
            sql += " AND run_id = ?"
            args += (run_id,)
        with self._tx() as db:
            return db.execute(sql, args).rowcount

    def check_writable(self) -> bool:
        """Whether a write transaction commits right now (disk full, read-only, locked: no)."""
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", (time.time(),)
                )
        except sqlite3.Error:
            return False
        return True

    # --- outbox -------------------------------------------------------------------------------

    def due_callbacks(self, now: float, exclude: set[int], limit: int = 100) -> list[OutboxItem]:
        """Undelivered callbacks whose next try is due, oldest first."""
        rows = self._db.execute(
            "SELECT id, run_id, kind, url, payload, attempts FROM outbox WHERE delivered_at IS NULL"
            " AND abandoned = 0 AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (now, limit + len(exclude)),
        ).fetchall()
        items = [
            OutboxItem(
                r["id"], r["run_id"], CallbackKind(r["kind"]), r["url"], r["payload"], r["attempts"]
            )
            for r in rows
            if r["id"] not in exclude
        ]
        return items[:limit]

    def next_callback_due(self) -> float | None:
        row = self._db.execute(
            "SELECT MIN(next_attempt_at) AS t FROM outbox WHERE delivered_at IS NULL AND abandoned = 0"
        ).fetchone()
        return row["t"] if row and row["t"] is not None else None

    def callback_delivered(self, item_id: int, attempts: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + ? WHERE id = ?",
                (time.time(), attempts, item_id),
            )

    def callback_failed(
        self, item_id: int, attempts: int, error: str, retry_at: float | None
    ) -> None:
        """Record a failed round of tries; ``retry_at`` None gives up on the callback for good."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + ?, last_error = ?, next_attempt_at = ?,"
                " abandoned = ? WHERE id = ?",
                (attempts, error[:500], retry_at or 0.0, int(retry_at is None), item_id),
            )

    def callbacks_for(self, run_id: str) -> list[dict[str, Any]]:
        """The final callbacks of a job and their delivery state (for diagnostics and tests)."""
        rows = self._db.execute(
            "SELECT kind, attempts, delivered_at, abandoned, last_error FROM outbox WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return [dict(r) for r in rows]


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: equal bodies give equal strings (idempotency)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
