"""The results schema and run directories: versioned, atomic, torn-line tolerant."""

from __future__ import annotations

import json

import pytest

from attnbench.errors import UserError
from attnbench.results.schema import SCHEMA_VERSION, Record, RunInfo, Status, SuiteInfo
from attnbench.results.store import RunWriter, load_run, new_run_id, resolve_run
from tests.helpers import small_case


def make_info(run_id: str) -> RunInfo:
    return RunInfo(
        run_id=run_id,
        attnbench_version="0",
        suite=SuiteInfo(name="t", sha256="0" * 64, document={}),
        environment={"hostname": "h"},
        started_at="2026-01-01T00:00:00+00:00",
    )


def make_record(run_id: str, status: Status = Status.ok, **extra) -> Record:
    case = small_case()
    return Record(run_id=run_id, case_id=case.key_id(), key=case.key(), case=case, status=status,
                  started_at="2026-01-01T00:00:00+00:00", duration_s=0.1, **extra)


def test_round_trip_and_numbers_never_codes(tmp_path):
    writer = RunWriter(tmp_path, make_info("r1"))
    writer.append(make_record("r1", Status.oom, reason="out of memory"))
    writer.append(make_record("r1", Status.ok, tflops=1.5))
    writer.finish("complete")
    run = load_run(tmp_path / "r1")
    assert [r.status for r in run.records] == [Status.oom, Status.ok]
    assert run.records[0].tflops is None  # not -1
    assert run.info.state == "complete" and run.info.ended_at
    assert run.info.status_counts == {"oom": 1, "ok": 1}
    line = json.loads((tmp_path / "r1" / "records.jsonl").read_text().splitlines()[0])
    assert line["schema_version"] == SCHEMA_VERSION and line["case"]["pass"] == "forward"


def test_killed_run_keeps_finished_records_and_skips_torn_line(tmp_path):
    writer = RunWriter(tmp_path, make_info("r2"))
    writer.append(make_record("r2"))
    # the process dies mid-write: half a line, no finish()
    with open(tmp_path / "r2" / "records.jsonl", "a") as handle:
        handle.write('{"schema_version": 1, "run_id": "r2", "case_')
    run = load_run(tmp_path / "r2")
    assert len(run.records) == 1
    assert run.info.state == "running"
    assert "torn last line" in run.warnings[0]


def test_other_schema_version_refused_by_name(tmp_path):
    writer = RunWriter(tmp_path, make_info("r3"))
    writer.finish("complete")
    path = tmp_path / "r3" / "run.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="schema version 99 is not supported.*reads version 1"):
        load_run(tmp_path / "r3")


def test_run_ids_unique_and_resolvable(tmp_path):
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    for run_id in ("20260101-000000-aaaaaa", "20260102-000000-bbbbbb"):
        RunWriter(tmp_path, make_info(run_id)).finish("complete")
    assert resolve_run("latest", tmp_path).name == "20260102-000000-bbbbbb"
    assert resolve_run("latest~1", tmp_path).name == "20260101-000000-aaaaaa"
    assert resolve_run("20260101", tmp_path).name == "20260101-000000-aaaaaa"
    with pytest.raises(UserError, match="only 2 run"):
        resolve_run("latest~2", tmp_path)
    with pytest.raises(UserError, match="no run"):
        resolve_run("nope", tmp_path)


# -- tables ---------------------------------------------------------------------------------
def test_table_cells_carry_three_significant_figures_and_the_spread_where_wide():
    from attnbench.results.schema import Memory, Timing
    from attnbench.results.tables import (SPREAD_NOTE, byte_size, memory_tables, performance_tables, records_frame,
                                          significant)

    assert [significant(x) for x in (1.7912, 0.077123, 0.000123456, 245.6, 12345.6, 0.0)] == [
        "1.79", "0.0771", "0.000123", "246", "12346", "0"]
    assert [byte_size(x) for x in (0, 512, 4096, 3 * 2**20 + 2**19, 5 * 2**30)] == [
        "0", "512 B", "4.00 KiB", "3.50 MiB", "5.00 GiB"]

    def timed(tflops, median, p20, p80, peak):
        return make_record("r", tflops=tflops, memory=Memory(peak_bytes=peak, method="linux_vmhwm"),
                           timing=Timing(method="perf_counter", warmup=0, repeats=5, median_s=median, p20_s=p20,
                                         p80_s=p80, samples_s=[median] * 5))

    steady = timed(0.0771, 1e-3, 0.99e-3, 1.01e-3, 4096)
    noisy = timed(0.0771, 1e-3, 0.8e-3, 1.3e-3, 0).model_copy(
        update={"case": steady.case.model_copy(update={"kernel": "sdpa"})})
    frame = records_frame([steady, noisy])
    [perf] = performance_tables(frame)
    assert perf.frame.loc[128, "naive"] == "0.0771"  # on a CPU, not 0.00
    assert perf.frame.loc[128, "sdpa"] == "0.0771 ±25%"  # p80/p20 = 1.6: (1.3 - 0.8) / 2 / 1.0
    assert perf.notes == [SPREAD_NOTE]
    [memory] = memory_tables(frame)
    assert list(memory.frame.columns) == ["S", "naive", "sdpa"] and memory.frame.index.name == "mask"
    assert memory.frame.iloc[0].tolist() == ["128", "4.00 KiB", "0"]
