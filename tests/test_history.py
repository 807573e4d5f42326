"""The SQLite history: idempotent import from a results root, runs listed, trend of a case."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from attnbench.history import HistoryStore
from attnbench.results.schema import Status
from tests.helpers import run_cli
from tests.synthetic_runs import Spec, case, noisy_samples, record_for, write_run


def three_runs(root):
    rng = np.random.default_rng(0)
    cases = [case("flex", "causal", 8192), case("flex", "full", 8192), case("sdpa_flash", "causal", 8192)]
    runs = []
    for i, slow in enumerate([1.0, 1.0, 1.3]):
        specs = [Spec(c, samples=noisy_samples(1e-3 * (slow if c.kernel == "flex" else 1.0), 20, 0.01, rng))
                 for c in cases]
        if i == 1:
            specs[2] = Spec(cases[2], Status.oom, reason="CUDA out of memory")
        runs.append(write_run(root, specs, started_at=f"2026-02-0{i + 1}T03:00:00+00:00"))
    return runs, cases


def test_import_is_idempotent_and_trend_follows_the_runs(tmp_path):
    runs, cases = three_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    with HistoryStore(db) as store:
        report = store.import_root(tmp_path)
        assert sorted(report.imported) == sorted(r.info.run_id for r in runs)
        again = store.import_root(tmp_path)
        assert again.imported == [] and len(again.unchanged) == 3
        assert [r["run_id"] for r in store.runs()] == [r.info.run_id for r in runs]
        [trend] = store.trend(kernels=["flex"], masks=["causal"])
        assert trend.case_id == cases[0].key_id()
        assert [p["run_id"] for p in trend.points] == [r.info.run_id for r in runs]
        assert 0.2 < trend.change < 0.4  # +30% planted in the last run
        [other] = store.trend(kernels=["sdpa_flash"])
        assert [p["status"] for p in other.points] == ["ok", "oom", "ok"]
        assert other.change is not None and abs(other.change) < 0.05
    # one row per (run, case), nothing duplicated by the second import
    count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    assert count == 9


def test_a_run_that_grew_is_reimported_and_a_damaged_one_is_skipped(tmp_path):
    runs, cases = three_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    with HistoryStore(db) as store:
        store.import_root(tmp_path)
    last = runs[-1]
    extra = record_for(last.info.run_id, Spec(case("flex", "causal", 16384), samples=[1e-3] * 5))
    with open(last.path / "records.jsonl", "a") as handle:
        handle.write(extra.to_json_line() + "\n")
    broken = tmp_path / "20990101-000000-broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    with HistoryStore(db) as store:
        report = store.import_root(tmp_path)
        assert report.imported == [last.info.run_id]
        assert len(report.problems) == 1 and "broken" in report.problems[0]
        assert len(store.trend(seqlens=[16384])) == 1


def test_history_command(tmp_path):
    runs, _ = three_runs(tmp_path)
    result = run_cli("history", "--root", str(tmp_path), "--kernel", "flex", "--mask", "causal", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["runs"]) == 3 and len(data["imported"]) == 3
    assert [c["label"] for c in data["cases"]] == [runs[0].records[0].case.label()]
    assert (tmp_path / "history.sqlite").exists()
    table = run_cli("history", "--root", str(tmp_path), "--seqlen", "8K")
    assert table.returncode == 0, table.stderr
    assert "3 run(s) imported" not in table.stdout and "0 run(s) imported" in table.stdout
    for run in runs:
        assert run.info.run_id in table.stdout
    assert "+3" in table.stdout  # flex's +30% trend
    bad = run_cli("history", "--root", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
