"""The benchmark suite (`make bench`) on a tiny random shape: it runs end to end and its JSON holds
every row with a positive throughput (or a stated reason for skipping it)."""

from __future__ import annotations

import json

import pytest

from experiments.benchmarks import cases, run, shapes

TINY_ARGS = [
    "--shape", "tiny", "--device", "cpu", "--threads", "1", "--repeats", "1",
    "--n-samples", "2", "--prompt-tokens", "24", "--response-tokens", "4", "--batch", "2",
    "--gen-batch", "2", "--gen-prompt-tokens", "24", "--new-tokens", "2",
    "--screen-samples", "2", "--screen-reply-tokens", "2",
]  # fmt: skip

MEASURED = {
    "ref_loop", "hf_hidden", "hf_plain", "tl_cache", "ours_extract",
    "ours_screen", "ours_screen_project", "hf_screen_forward", "hf_screen_generate", "ref_screen",
    "ours_gen", "ours_gen_steered", "hf_gen", "hf_gen_hook",
}  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    returned = run.run_suite([*TINY_ARGS, "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(returned["rows"]))
    return written


def test_json_structure(result):
    for key in (
        "device",
        "versions",
        "model",
        "sizes",
        "rows",
        "comparisons",
        "formulas",
        "config",
        "peaks",
    ):
        assert key in result
    assert result["format"] == "personalens.bench"
    assert result["device"]["kind"] == "cpu" and result["device"]["words"].startswith("CPU")
    for dist in ("torch", "transformers", "transformer-lens"):
        assert result["versions"][dist]
    model = result["model"]
    assert (
        model["shape"] == "tiny" and model["n_layers"] == shapes.SHAPES["tiny"]["num_hidden_layers"]
    )
    assert model["matmul_params"] > 0 and model["bytes_per_decode_step"] > 0
    assert result["sizes"]["n_samples"] == 2 and result["steer_layer"] == model["n_layers"] // 2


def test_every_row_has_a_positive_throughput_or_a_reason(result):
    rows = {r["key"]: r for r in result["rows"]}
    assert MEASURED <= set(rows), MEASURED - set(rows)
    for r in result["rows"]:
        assert r["group"] in ("extraction", "screening", "generation")
        if r["skipped"] is None:
            assert r["value"] is not None and r["value"] > 0, r
            if r["key"] not in ("compute_bound", "bandwidth_bound"):
                assert r["seconds"] and all(s > 0 for s in r["seconds"]), r
                assert r["memory"]["peak_bytes"] > 0
        else:
            assert r["value"] is None and r["skipped"], r
    # a CPU has no spec sheet: the compute bound uses a matmul timed in the same run (and says
    # so); the bandwidth bound has no such measurement and is skipped with a reason
    assert rows["compute_bound"]["value"] > 0
    assert "peak: measured" in rows["compute_bound"]["note"]
    assert result["peaks"]["tflops_source"].startswith("measured")
    assert rows["bandwidth_bound"]["skipped"]


def test_comparisons_are_ratios_of_rows(result):
    rows = {r["key"]: r for r in result["rows"]}
    labels = {c["comparison"] for c in result["comparisons"]}
    assert "extraction: ours / reference loop" in labels
    assert "generation: ours steered / HF generate + hook" in labels
    for c in result["comparisons"]:
        ours, ref = rows[c["ours_key"]], rows[c["reference_key"]]
        assert c["ratio"] == pytest.approx(ours["value"] / ref["value"])


def test_prompts_have_exact_token_lengths():
    import random

    tok = shapes.byte_tokenizer()
    items, ids = cases.texts_of_length(tok, 3, 30, random.Random(0), chat=True)
    assert [len(i) for i in ids] == [30, 30, 30]
    assert len({i[0]["content"] for i in items}) == 3  # distinct prompts
    texts, ids = cases.texts_of_length(tok, 2, 7, random.Random(0), chat=False)
    assert [len(i) for i in ids] == [7, 7]
