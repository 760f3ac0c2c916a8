"""The shipped judge benchmark and the judge-bench study and command, with a fake judge."""

import argparse
import json
import math

import pytest

from personalens.errors import PersonaLensError, RunDirError
from personalens.extraction.traits import list_traits
from personalens.studies.judge_bench import (
    KINDS,
    bench_traits,
    load_bench,
    run_judge_bench,
    summarize_trait,
)

HARD = {"negation", "irony", "announce_then_behave", "topic_words", "plain_words"}


class KnowsLabels:
    """A fake judge that scores the benchmark's label-1 replies 80 and the others 20."""

    def __init__(self, name="fake:labels"):
        self.name = name
        self.calls = 0
        self.pos = {it.reply for t in bench_traits() for it in load_bench(t) if it.label == 1}

    def score_trait(self, trait, items):
        self.calls += len(items)
        return [80.0 if it.answer in self.pos else 20.0 for it in items]

    def score_coherence(self, items):
        return [100.0] * len(items)


def test_benchmark_covers_the_traits_balanced_with_hard_cases():
    traits = bench_traits()
    assert len(traits) >= 6
    assert {"evil", "sycophantic"} <= set(traits) <= set(list_traits())
    assert len({"compassionate", "nervous", "outgoing", "calm", "dependable"} & set(traits)) >= 3
    assert {"machiavellian", "narcissistic", "psychopathic"} & set(traits)
    ids = []
    for trait in traits:
        items = load_bench(trait)
        assert 20 <= len(items) <= 30
        assert sum(it.label for it in items) * 2 == len(items)  # balanced
        assert HARD <= {it.kind for it in items} <= set(KINDS)
        assert all(it.question.strip() and it.reply.strip() for it in items)
        ids += [it.id for it in items]
    assert len(ids) == len(set(ids))


def test_summarize_trait_counts_nan_as_wrong_and_reports_kinds():
    items = load_bench("evil")
    perfect = [90.0 if it.label else 10.0 for it in items]
    s = summarize_trait("evil", items, perfect, n_boot=50)
    assert s.auc == 1.0 and s.accuracy == 1.0 and s.auc_ci == (1.0, 1.0)
    assert (s.mean_pos, s.mean_neg) == (90.0, 10.0)
    assert sum(k["n"] for k in s.by_kind.values()) == len(items)
    flipped = summarize_trait("evil", items, [100 - x for x in perfect], n_boot=0)
    assert flipped.auc == 0.0 and flipped.accuracy == 0.0 and flipped.auc_ci is None
    one_nan = [math.nan] + perfect[1:]
    s = summarize_trait("evil", items, one_nan, n_boot=0)
    assert s.n_nan == 1 and s.accuracy == pytest.approx((len(items) - 1) / len(items))
    assert s.auc == 1.0  # NaN left out of the AUC


def test_run_writes_summary_and_resumes(tmp_path):
    judge = KnowsLabels()
    out = tmp_path / "bench"
    result = run_judge_bench(judge, out=out, traits=["evil", "outgoing"], n_boot=20, progress=False)
    assert [t.trait for t in result.traits] == ["evil", "outgoing"]
    assert all(t.auc == 1.0 and t.accuracy == 1.0 for t in result.traits)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == "fake:labels" and len(summary["traits"]) == 2
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {r["judge"] for r in rows} == {"fake:labels"}
    assert "| evil |" in (out / "summary.md").read_text()
    calls = judge.calls
    again = run_judge_bench(judge, out=out, traits=["evil", "outgoing"], progress=False)
    assert judge.calls == calls  # everything was scored already
    assert again.traits[0].auc == 1.0
    with pytest.raises(RunDirError, match="different settings"):
        run_judge_bench(KnowsLabels("fake:other"), out=out, traits=["evil"], progress=False)


def test_unknown_trait_is_refused_before_scoring(tmp_path):
    judge = KnowsLabels()
    with pytest.raises(PersonaLensError, match="no trait 'nope'"):
        run_judge_bench(judge, out=tmp_path / "x", traits=["nope"], progress=False)
    assert judge.calls == 0 and not (tmp_path / "x").exists()


def test_command_runs_with_the_chosen_judge(tmp_path, monkeypatch, capsys):
    from personalens.cli import common
    from personalens.cli.judge_commands import JUDGE_BENCH

    seen = {}

    def fake_judge(args):
        seen["judge"] = args.judge
        return KnowsLabels()

    monkeypatch.setattr(common, "judge_from_args", fake_judge)
    parser = argparse.ArgumentParser()
    JUDGE_BENCH(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    argv = ["judge-bench", "--judge", "local", "--out", str(out), "--traits", "nervous"]
    args = parser.parse_args([*argv, "--n-boot", "10", "--quiet"])
    assert args.func(args) == 0
    assert seen["judge"] == "local"
    assert "| nervous | 24 | 1.00" in capsys.readouterr().out
    assert (out / "summary.json").is_file()
