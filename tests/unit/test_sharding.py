"""Several workers sharing one run directory (personalens.runs.sharding): each chunk is done once, by
its worker; every worker ends with the whole result; the result equals a one-process run."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard, local_device, read_run_log, resolve_shard

from ..conftest import make_tiny_model

FAST = {"poll_s": 0.02, "timeout_s": 60.0}


def run_workers(n, target):
    """``target(shard)`` in ``n`` threads, one per worker; re-raise the first failure."""
    results, errors = [None] * n, []

    def work(i):
        try:
            results[i] = target(Shard(i, n, **FAST))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


# ----------------------------------------------------------------------------- the spec


def test_parse_env_and_ownership():
    s = Shard.parse("1/4")
    assert (s.index, s.count, str(s), s.is_leader) == (1, 4, "1/4", False)
    assert [i for i in range(10) if s.owns(i)] == [1, 5, 9]
    assert s.log_path("run/responses.jsonl").name == "responses.shard-1-of-4.jsonl"
    assert resolve_shard("0/1") is None and resolve_shard(None) is None
    assert str(resolve_shard("2/3")) == "2/3"
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}
    assert str(Shard.from_env(env)) == "3/8"
    assert str(Shard.from_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "6"})) == "5/6"
    with pytest.raises(PersonaLensError, match="0-based: --shard 0/4 ... 3/4"):
        Shard.parse("4/4")
    with pytest.raises(PersonaLensError, match="expected INDEX/COUNT"):
        Shard.parse("first")
    with pytest.raises(PersonaLensError, match="torchrun, accelerate launch or srun"):
        Shard.from_env({})
    assert local_device("cuda", env) == "cuda:3"
    assert local_device("cuda:1", env) == "cuda:1" and local_device("cpu", env) == "cpu"
    assert local_device("cuda", {}) == "cuda"


# ----------------------------------------------------------------------------- the mechanism


def test_each_chunk_runs_once_and_every_worker_gets_all(tmp_path):
    path = tmp_path / "log.jsonl"
    items = [f"k{i}" for i in range(23)]
    calls: list[tuple[str, tuple[str, ...]]] = []

    def target(shard):
        def process(chunk):
            calls.append((str(shard), tuple(chunk)))
            return [{"key": k, "v": k.upper(), "by": str(shard)} for k in chunk]

        return run_resumable(
            items, lambda k: k, process, path=path, chunk_size=4, desc="t", shard=shard,
            progress=False,
        )  # fmt: skip

    results = run_workers(3, target)
    assert sorted(k for _, chunk in calls for k in chunk) == sorted(items)  # each item once
    for shard, chunk in calls:  # chunk i (of 4 items) went to worker i % 3
        assert int(shard[0]) == items.index(chunk[0]) // 4 % 3
    for res in results:
        assert sorted(res) == sorted(items) and res["k7"]["v"] == "K7"
    assert not path.exists()  # every worker wrote its own file
    assert len(list(tmp_path.glob("log.shard-*-of-3.jsonl"))) == 3

    # a run without a shard, or with another count, finds everything done
    def fail(chunk):
        raise AssertionError("nothing should be redone")

    again = run_resumable(items, lambda k: k, fail, path=path, chunk_size=4, desc="t",
                          progress=False)  # fmt: skip
    assert sorted(again) == sorted(items)
    assert len(read_run_log(path)) == len(items)


def test_a_missing_worker_times_out_with_the_fix(tmp_path):
    shard = Shard(0, 2, poll_s=0.01, timeout_s=0.2)
    with pytest.raises(PersonaLensError, match=r"shard 0/2: .*still missing.*every worker 0..1"):
        run_resumable(
            list("abcd"), lambda k: k, lambda c: [{"key": k} for k in c], path=tmp_path / "x.jsonl",
            chunk_size=1, desc="t", progress=False, shard=shard,
        )  # fmt: skip
    # its own work was kept: the last worker (or a run without --shard) only does the rest
    done = []

    def rest(chunk):
        done.extend(chunk)
        return [{"key": k} for k in chunk]

    run_resumable(list("abcd"), lambda k: k, rest, path=tmp_path / "x.jsonl", chunk_size=1,
                  desc="t", progress=False)  # fmt: skip
    assert done == ["b", "d"]


def test_a_torn_line_in_another_workers_file_is_left_alone(tmp_path):
    path = tmp_path / "log.jsonl"
    other = Shard(1, 2).log_path(path)
    other.write_text('{"key": "a"}\n{"key": "b", "half')  # worker 1 is mid-append
    before = other.read_bytes()
    assert [r["key"] for r in read_run_log(path)] == ["a"]
    # worker 0 owns chunk "a" (done by worker 1 already) and waits for "b"
    with pytest.raises(PersonaLensError, match="1 t records"):
        run_resumable(
            ["a", "b"], lambda k: k, lambda c: [{"key": k} for k in c], path=path,
            chunk_size=1, desc="t", progress=False, shard=Shard(0, 2, poll_s=0.01, timeout_s=0.1),
        )  # fmt: skip
    assert other.read_bytes() == before


# ----------------------------------------------------------------------------- the pipelines


def test_sharded_extraction_equals_one_process(tmp_path):
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.pipeline import extract
    from personalens.extraction.traits import parse_trait

    from .test_extraction_cli import TRAIT, StubJudge

    trait = parse_trait(TRAIT)
    cfg = ExtractionConfig(
        threshold=0.0, max_new_tokens=6, generation_batch_size=3, activation_batch_size=2,
        judge_chunk=3,
    )  # fmt: skip
    ref = extract(make_tiny_model(), trait, StubJudge(), cfg, tmp_path / "ref",
                         progress=False)  # fmt: skip
    out = tmp_path / "sharded"
    # one model per worker, as in separate processes (hooks are per model)
    models = [make_tiny_model(), make_tiny_model()]
    results = run_workers(
        2,
        lambda s: extract(
            models[s.index], trait, StubJudge(), cfg, out, progress=False, shard=s
        ),  # fmt: skip
    )
    for res in results:
        assert torch.equal(res.vector.directions, ref.vector.directions)
        assert res.summary["layer_auc"] == ref.summary["layer_auc"]
    assert json.loads((out / "summary.json").read_text())["layer_auc"] == ref.summary["layer_auc"]
    assert (out / "vector.json").exists() and (out / "vectors" / "prompt_avg.json").exists()
    for stage in ("responses", "judge_scores"):
        assert not (out / f"{stage}.jsonl").exists()
        n = [len(Shard(i, 2).log_path(out / f"{stage}.jsonl").read_text().splitlines())
             for i in range(2)]  # fmt: skip
        assert sum(n) == len(ref.records) and min(n) > 0
    assert sorted(p.name for p in (out / "activations").iterdir()) == sorted(
        p.name for p in (tmp_path / "ref" / "activations").iterdir()
    )

    # a run without --shard in the same directory redoes nothing and agrees
    import personalens.extraction.responses as extraction

    def no_generation(*a, **k):
        raise AssertionError("nothing should be regenerated")

    orig = extraction.generate_samples
    extraction.generate_samples = no_generation
    try:
        merged = extract(models[0], trait, StubJudge(), cfg, out, progress=False)
    finally:
        extraction.generate_samples = orig
    assert torch.equal(merged.vector.directions, ref.vector.directions)


def test_sharded_extraction_needs_a_run_dir(tiny_model):
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.pipeline import extract
    from personalens.extraction.traits import parse_trait

    from .test_extraction_cli import TRAIT, StubJudge

    with pytest.raises(PersonaLensError, match="run_dir shared by the workers"):
        extract(tiny_model, parse_trait(TRAIT), StubJudge(), ExtractionConfig(),
                       shard="0/2", progress=False)  # fmt: skip


def test_sharded_screen_from_the_command_line_equals_one_process(
    tiny_hf_dir, tmp_path, capsys, monkeypatch
):
    import personalens.model.load
    from personalens.cli.main import main
    from personalens.vectors.vector import PersonaVector

    # threads stand in for worker processes; loading a model is not thread-safe (torch's
    # global default dtype), so the threads load one at a time
    lock, load = threading.Lock(), personalens.model.load.load_model

    def load_one_at_a_time(*a, **k):
        with lock:
            return load(*a, **k)

    monkeypatch.setattr(personalens.model.load, "load_model", load_one_at_a_time)

    g = torch.Generator().manual_seed(0)
    vec = PersonaVector(directions=torch.randn(3, 48, generator=g), model="m", trait="evil")
    vec_path = vec.save(tmp_path / "vec")
    rows = [{"id": f"s{i}", "prompt": f"Tell me about item {i}.", "answer": f"Item {i}!"}
            for i in range(7)]  # fmt: skip
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [
        "screen", "--model", str(tiny_hf_dir), "--vector", str(vec_path), "--data", str(data),
        "--layer", "1", "--max-new-tokens", "4", "--batch-size", "2", "--quiet",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    codes = run_workers(
        3,
        lambda s: main(
            [*argv, "--out", str(tmp_path / "three"), "--shard", str(s), "--shard-timeout", "120"]
        ),  # fmt: skip
    )
    assert codes == [0, 0, 0]
    one, three = tmp_path / "one", tmp_path / "three"
    assert (three / "scores.csv").read_text() == (one / "scores.csv").read_text()
    assert (three / "screening.html").exists()
    assert not (three / "generations.jsonl").exists()
    assert len(list(three.glob("projections.shard-*-of-3.jsonl"))) == 3
    summary = json.loads((three / "summary.json").read_text())
    assert summary["n"] == 7 and summary["mean_delta_p"] == pytest.approx(
        json.loads((one / "summary.json").read_text())["mean_delta_p"]
    )
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "x"), "--shard", "3/3"]) == 2
    assert "0-based" in capsys.readouterr().err


def test_sharded_steering_sweep_equals_one_process(tmp_path):
    from personalens.model.generation import GenerationConfig
    from personalens.studies.steering_sweep import steering_sweep

    from .test_sweep import PROMPTS, LengthJudge

    g = torch.Generator().manual_seed(3)
    vec_dirs = torch.randn(3, 32, generator=g) * 3.0
    from personalens.vectors.vector import PersonaVector

    vec = PersonaVector(directions=vec_dirs, model="tiny-random", trait="evil")

    def sweep(model, out, shard=None):
        return steering_sweep(
            model, vec, PROMPTS, layers=[0, 2], coeffs=[0, 1.0, 4.0], judge=LengthJudge(),
            generation=GenerationConfig(max_new_tokens=6), progress=False, out=out, shard=shard,
        )  # fmt: skip

    ref = sweep(make_tiny_model(), tmp_path / "one")
    models = [make_tiny_model() for _ in range(2)]
    results = run_workers(2, lambda s: sweep(models[s.index], tmp_path / "two", s))
    for res in results:
        assert res.records == ref.records
    two = tmp_path / "two"
    assert json.loads((two / "sweep.json").read_text()) == json.loads(
        (tmp_path / "one" / "sweep.json").read_text()
    )
    cells = [
        len(Shard(i, 2).log_path(two / "responses.jsonl").read_text().splitlines())
        for i in range(2)
    ]
    assert sorted(cells) == [2, 3]  # 5 cells: coeff 0 once, then 2 layers x 2 coeffs


def test_two_worker_processes_share_a_screen(tiny_hf_dir, tmp_path):
    """Real processes, as on several GPUs: `python -m personalens screen --shard i/2`."""
    import os
    import subprocess
    import sys

    from personalens.cli.main import main
    from personalens.vectors.vector import PersonaVector

    vec = PersonaVector(directions=torch.randn(3, 48), model="m", trait="evil")
    vec_path = vec.save(tmp_path / "vec")
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "answer": f"Answer {i}."}) + "\n"
            for i in range(6)
        )  # fmt: skip
    )
    argv = [
        "screen", "--model", str(tiny_hf_dir), "--vector", str(vec_path), "--data", str(data),
        "--layer", "2", "--max-new-tokens", "3", "--batch-size", "2", "--quiet",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "personalens",
                *argv,
                "--out",
                str(tmp_path / "two"),
                "--shard",
                f"{i}/2",
                "--shard-timeout",
                "120",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "shard 1/2: done" in outs[1]
    two = tmp_path / "two"
    assert (two / "scores.csv").read_text() == (tmp_path / "one" / "scores.csv").read_text()
    assert len(list(two.glob("generations.shard-*-of-2.jsonl"))) == 2
