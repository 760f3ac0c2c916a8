"""Reliability of run directories: finished work is never lost (issue 18's data-loss cases).

Each test replays one case of the reliability report on the tiny random model: a refused
resume, a damaged log line in the middle, two writers, a truncated activation shard, a full
disk, ``--out`` on a file, and the permissions of saved vectors. The sibling modules
``test_reliability_inputs.py`` and ``test_reliability_judges.py`` hold the bad-input and judge
cases.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file

from personalens._io import append_jsonl, atomic_write_json, read_jsonl
from personalens.errors import PersonaLensError, RunDirError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.pipeline import extract
from personalens.extraction.run_activations import collect_run_activations
from personalens.extraction.traits import parse_trait
from personalens.judges.base import JudgeError
from personalens.runs.lock import LOCK_FILE, run_lock
from personalens.vectors.vector import PersonaVector

from .test_extraction_cli import TRAIT, StubJudge

CFG = ExtractionConfig(
    threshold=0.0, max_new_tokens=6, generation_batch_size=4, activation_batch_size=3
)


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (the lock file aside) and its bytes."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished extraction run of the tiny model (made once; tests copy it)."""
    from tests.conftest import make_tiny_model

    run = tmp_path_factory.mktemp("finished") / "run"
    result = extract(make_tiny_model(), parse_trait(TRAIT), StubJudge(), CFG, run, progress=False)
    return run, result


@pytest.fixture()
def run_copy(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    return run


# ----------------------------------------------------------------------------- 1. refused resume


def test_a_refused_resume_leaves_every_file_as_it_was(tiny_model, run_copy):
    before = _snapshot(run_copy)
    assert "summary.json" in before and "vector.json" in before
    other = replace(CFG, max_new_tokens=7)  # the one-flag typo of the report
    with pytest.raises(RunDirError, match=r"max_new_tokens: '6' -> '7'.*Nothing in it"):
        extract(tiny_model, parse_trait(TRAIT), StubJudge(), other, run_copy, progress=False)
    assert _snapshot(run_copy) == before


def test_a_rerun_with_the_same_settings_redoes_nothing_and_keeps_the_result(
    tiny_model, run_copy, finished_run, monkeypatch
):
    import personalens.extraction.responses as responses

    def no_generation(*a, **k):
        raise AssertionError("nothing should be regenerated")

    monkeypatch.setattr(responses, "generate_samples", no_generation)
    result = extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run_copy, progress=False)
    assert torch.equal(result.vector.directions, finished_run[1].vector.directions)
    assert (
        json.loads((run_copy / "summary.json").read_text())["layer_auc"]
        == (finished_run[1].summary["layer_auc"])
    )


class BrokenJudge(StubJudge):
    name = "broken"

    def score_trait(self, trait, items):
        raise JudgeError("the judge server is down (test)")


def test_a_start_refused_by_the_judge_probe_binds_nothing(tiny_model, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(JudgeError):
        extract(tiny_model, parse_trait(TRAIT), BrokenJudge(), CFG, run, progress=False)
    assert not (run / "config.json").exists()  # the corrected rerun is not refused
    extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run, progress=False)
    assert json.loads((run / "config.json").read_text())["judge"] == "stub"


def test_out_on_a_file_is_refused_before_anything_runs(tiny_model, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, path, progress=False)
    assert path.read_text() == "mine"


# ----------------------------------------------------------------------------- 2. damaged logs


def test_a_bad_line_in_the_middle_of_a_log_is_an_error_not_a_truncation(tmp_path):
    path = tmp_path / "responses.jsonl"
    append_jsonl(path, [{"i": i} for i in range(80)])
    lines = path.read_text().splitlines(keepends=True)
    lines[8] = '{"i": 8, oops\n'
    path.write_text("".join(lines))
    before = path.read_bytes()
    with pytest.raises(RunDirError, match=r"responses.jsonl, line 9 of 80.*71 finished record"):
        read_jsonl(path)
    assert path.read_bytes() == before  # nothing truncated


def test_only_the_torn_last_line_is_repaired(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as fh:
        fh.write('{"a": 3, "b"\n')  # a damaged last line, even with its newline
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    with open(path, "ab") as fh:
        fh.write(b'{"a": \xff')  # torn mid-character
    assert read_jsonl(path, repair=False) == [{"a": 1}, {"a": 2}]
    assert path.read_bytes().endswith(b"\xff")  # repair=False leaves the file alone


def test_extract_on_a_log_damaged_in_the_middle_stops_and_keeps_the_run(tiny_model, run_copy):
    log = run_copy / "responses.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[3] = "not json\n"
    log.write_text("".join(lines))
    before = _snapshot(run_copy)
    with pytest.raises(RunDirError, match=r"responses.jsonl, line 4 of"):
        extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run_copy, progress=False)
    assert _snapshot(run_copy) == before


# ----------------------------------------------------------------------------- 3. one writer


HOLDER = (
    "import sys, time\n"
    "from personalens.runs.lock import run_lock\n"
    "with run_lock(sys.argv[1], shared=sys.argv[2] == 'shared'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


@contextlib.contextmanager
def held_by_another_process(run: Path, shared: bool = False):
    """``run`` held by a child process (the lock is per process: holds nest within one)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run), "shared" if shared else "exclusive"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9: the kernel drops its lock
        proc.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(tiny_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with held_by_another_process(run) as other:
        with pytest.raises(RunDirError, match=rf"in use by process {other.pid}"):
            extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing else written
    # the holder was killed with -9: its lock is gone, the rerun proceeds
    extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run, progress=False)
    assert (run / "summary.json").exists()


def test_sharded_workers_share_and_exclude_a_plain_run(tmp_path):
    with held_by_another_process(tmp_path, shared=True):
        with run_lock(tmp_path, shared=True):  # another worker of the sharded run
            pass
        with pytest.raises(RunDirError, match="workers of a sharded run"):
            with run_lock(tmp_path):
                pass
    with held_by_another_process(tmp_path) as other:
        with pytest.raises(RunDirError, match=rf"process {other.pid}.*--shard i/n"):
            with run_lock(tmp_path, shared=True):
                pass


def test_holds_nest_within_one_process(tmp_path):
    with run_lock(tmp_path), run_lock(tmp_path), run_lock(tmp_path, shared=True):
        pass
    with run_lock(tmp_path, shared=True):
        with pytest.raises(RunDirError):  # a sharded worker cannot become the only writer
            with run_lock(tmp_path):
                pass
    with held_by_another_process(tmp_path):  # everything was released
        pass


# ----------------------------------------------------------------------------- 4. damaged cache


def test_a_truncated_activation_shard_is_recomputed_with_a_warning(
    tiny_model, run_copy, finished_run
):
    shard = sorted((run_copy / "activations").glob("*.safetensors"))[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.warns(RuntimeWarning, match=rf"{shard.name} is damaged"):
        result = extract(tiny_model, parse_trait(TRAIT), StubJudge(), CFG, run_copy,
                         progress=False)  # fmt: skip
    # recomputed, not restored: equal up to float summation order (threads under load)
    torch.testing.assert_close(
        result.vector.directions, finished_run[1].vector.directions, rtol=1e-5, atol=1e-6
    )
    fresh = load_file(shard)
    for name, tensor in safetensors_load(good).items():
        torch.testing.assert_close(fresh[name], tensor, rtol=1e-5, atol=1e-6)


def test_a_damaged_shard_without_a_model_names_the_file(run_copy, finished_run):
    for shard in (run_copy / "activations").glob("*.safetensors"):
        shard.write_bytes(b"garbage")
    records = [r for r in finished_run[1].records if r["split"] == "extract"][:3]
    with pytest.raises(PersonaLensError, match=r"activations/\w+\.safetensors is damaged.*delete"):
        collect_run_activations(None, records, CFG, run_copy, progress=False)


# ----------------------------------------------------------------------------- 5. full disk


def test_a_full_disk_is_one_paragraph_and_keeps_the_old_file(tmp_path):
    from personalens._io import atomic_write

    path = atomic_write_json(tmp_path / "summary.json", {"old": 1})

    def full(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(RunDirError, match="No space left on device.*free some space"):
        atomic_write(path, full)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no .tmp left


def test_a_full_disk_during_an_append_is_one_paragraph(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}])

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunDirError, match="No space left"):
        append_jsonl(path, [{"a": 2}])


# ----------------------------------------------------------------------------- small


def test_saved_vectors_have_the_same_permissions_as_every_other_file(tmp_path, finished_run):
    vec: PersonaVector = finished_run[1].vector
    vec.save(tmp_path / "v")
    other = atomic_write_json(tmp_path / "other.json", {})
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "v.safetensors", tmp_path / "v.json", other)
    }
    assert len(set(modes.values())) == 1, modes
    umask = os.umask(0o022)
    os.umask(umask)  # read the umask back (tests only: the library never sets it)
    assert modes["v.safetensors"] == 0o666 & ~umask


@pytest.mark.parametrize(
    "study",
    [
        "personalens.studies.steering_sweep:steering_sweep",
        "personalens.studies.screening:screen",
        "personalens.studies.monitoring_experiment:monitoring_experiment",
        "personalens.studies.finetuning.train:finetune",
    ],
)
def test_every_study_with_a_run_directory_holds_it(study, tmp_path):
    import importlib

    module, name = study.split(":")
    import inspect

    fn = getattr(importlib.import_module(module), name)
    required = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
    ]
    args = [None] * len(required)
    with held_by_another_process(tmp_path):  # refused before the study reads its arguments
        with pytest.raises(RunDirError, match="one writer per run directory"):
            fn(*args, out=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        fn(*args, out=tmp_path / "file")


class NanJudge(StubJudge):
    name = "nan"

    def __init__(self, probe_ok: bool):
        self.probe_ok = probe_ok

    def score_trait(self, trait, items):
        if self.probe_ok and items[0].question == "Hello?":
            return [50.0] * len(items)
        return [float("nan")] * len(items)


def test_a_judge_that_gives_only_nan_fails_its_probe_and_binds_nothing(tiny_model, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(JudgeError, match="no usable score"):
        extract(tiny_model, parse_trait(TRAIT), NanJudge(False), CFG, run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_all_nan_scores_say_the_judge_failed_not_lower_the_threshold(tiny_model, tmp_path):
    from personalens.extraction.pipeline import NothingPassedError

    with pytest.raises(NothingPassedError, match="gave no usable trait score") as err:
        extract(tiny_model, parse_trait(TRAIT), NanJudge(True), CFG, tmp_path / "r",
                progress=False)  # fmt: skip
    assert "--threshold" not in str(err.value)


class SometimesNanJudge(StubJudge):
    """A deterministic judge that cannot score some replies (NaN coherence), like the offline
    judge on replies too short to judge."""

    name = "sometimes-nan"
    calls = 0

    def score_coherence(self, items):
        SometimesNanJudge.calls += len(items)
        return [float("nan") if len(it.answer) % 3 == 0 else 100.0 for it in items]


def test_a_rerun_asks_again_for_nan_rows_but_logs_no_repeat(tiny_model, tmp_path):
    run = tmp_path / "run"
    cfg = replace(CFG, max_new_tokens=8)
    extract(tiny_model, parse_trait(TRAIT), SometimesNanJudge(), cfg, run, progress=False)
    log = (run / "judge_scores.jsonl").read_bytes()
    nan_rows = sum(1 for r in read_jsonl(run / "judge_scores.jsonl") if r["coherence"] is None)
    assert nan_rows > 0
    SometimesNanJudge.calls = 0
    extract(tiny_model, parse_trait(TRAIT), SometimesNanJudge(), cfg, run, progress=False)
    assert SometimesNanJudge.calls == 1 + nan_rows  # the probe, then only the NaN rows
    assert (run / "judge_scores.jsonl").read_bytes() == log  # the same NaN is not logged again


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "argv",
    [
        ["extract", "--trait", "evil", "--judge", "offline"],
        ["steering-sweep", "--vector", "evil", "--coeffs", "0", "4"],
        ["screen", "--vector", "evil", "--data", "DATA"],
    ],
)
def test_the_cli_checks_out_before_loading_the_model(argv, tmp_path, monkeypatch, capsys):
    from personalens.cli import common
    from personalens.cli.main import main

    def load(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(common, "load_model_from_args", load)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "answer": "Hello"}) + "\n")
    argv = [str(data) if a == "DATA" else a for a in argv]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main([*argv, "--out", str(notes)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert notes.read_text() == "mine"
    run = tmp_path / "run"
    run.mkdir()
    with held_by_another_process(run) as other:
        assert main([*argv, "--out", str(run)]) == 2
    assert f"in use by process {other.pid}" in capsys.readouterr().err
