"""The CLI as a person (or a script) uses it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import Workspace
from tests.engine.test_reconcile import LEFT, MATCH, RIGHT

KALLA = [sys.executable, "-m", "kalla"]


def kalla(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KALLA, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_run_json_prints_exactly_the_completion_payload(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    run_id = str(uuid.uuid4())
    proc = kalla(
        "run", str(ws.recipe(MATCH)), "--json", "--run-id", run_id, "-o", "ev", cwd=ws.root
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert set(payload) == {
        "run_id",
        "matched_count",
        "unmatched_left_count",
        "unmatched_right_count",
        "output_paths",
    }
    assert payload["run_id"] == run_id and payload["matched_count"] == 2
    for path in payload["output_paths"].values():
        assert Path(path).is_file() and f"ev/runs/{run_id}" in path
    assert pq.read_table(payload["output_paths"]["unmatched_left"]).num_rows == 2


def test_source_overrides_supply_uris(ws: Workspace) -> None:
    ws.write("a.csv", LEFT)
    ws.write("b.csv", RIGHT)
    recipe = ws.recipe(MATCH, left="missing.csv", right="missing.csv")
    proc = kalla("run", str(recipe), "--json", "--source", f"l_src={ws.root / 'a.csv'}",
                 "--source", f"r_src={ws.root / 'b.csv'}", cwd=ws.root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["matched_count"] == 2


def test_invalid_input_exits_2_with_a_typed_json_error(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    proc = kalla("run", str(ws.recipe("SELECT 1; DROP TABLE l_src")), "--json", cwd=ws.root)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)
    assert error["code"] == "recipe_invalid" and "match_sql_forbidden" in error["error"]
    assert set(error) == {"run_id", "error", "code", "stage"}


def test_runtime_failure_exits_1(ws: Workspace) -> None:
    ws.write("left.csv", "id,amount\n1,abc\n")
    ws.write("right.csv", RIGHT)
    proc = kalla("run", str(ws.recipe("SELECT l.id FROM l_src l JOIN r_src r ON tolerance_match(l.amount, r.amount, 0.02)")),
                 "--json", cwd=ws.root)  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    error = json.loads(proc.stdout)
    assert error["stage"] == "matching" and error["code"] == "execution_failed"


def test_validate_lists_every_problem(ws: Workspace) -> None:
    bad = ws.write(
        "bad.yaml", "recipe_id: x\nname: ''\nmatch_sql: UPDATE t SET a = 1\nsources: {}\n"
    )
    proc = kalla("validate", str(bad), cwd=ws.root)
    assert proc.returncode == 2
    assert "4 problem(s)" in " ".join(proc.stderr.split())
    for words in ("name: must not be blank", "match_sql", "sources.left: is required"):
        assert words in proc.stderr
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    ok = kalla("validate", str(ws.recipe(MATCH)), cwd=ws.root)
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_memory_limit_flag(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    proc = kalla("run", str(ws.recipe(MATCH)), "--json", "--memory-limit", "256M", cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    bad = kalla("run", str(ws.recipe(MATCH)), "--memory-limit", "lots", cwd=ws.root)
    assert bad.returncode == 2 and "512M" in bad.stderr


def test_demo_runs_the_bundled_example(tmp_path: Path) -> None:
    proc = kalla("demo", "-o", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    meta = json.loads((runs[0] / "metadata.json").read_text())
    expected = json.loads((Path(__file__).parents[1] / "examples" / "expected.json").read_text())
    assert meta["status"] == "completed"
    assert meta["matched_count"] == expected["matched"]
    assert meta["unmatched_left_count"] == expected["unmatched_left"]
    assert meta["unmatched_right_count"] == expected["unmatched_right"]
    assert str(runs[0]) in proc.stderr.replace("\n", "")
    assert "None" not in proc.stderr


def test_schema_recipe_is_json_schema(tmp_path: Path) -> None:
    proc = kalla("schema", "recipe", cwd=tmp_path)
    schema = json.loads(proc.stdout)
    assert schema["title"] == "Recipe" and "match_sql" in schema["properties"]


def test_no_reasons_flag(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    proc = kalla("run", str(ws.recipe(MATCH)), "--json", "--no-reasons", cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    path = json.loads(proc.stdout)["output_paths"]["unmatched_right"]
    assert "_reason" not in pq.read_schema(path).names
