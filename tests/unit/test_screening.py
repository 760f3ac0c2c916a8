"""Dataset screening by projection difference ΔP on tiny random models."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import personalens.studies.screening as scr
from personalens.cli.main import main
from personalens.conventions import hook_name
from personalens.errors import LayerError, PersonaLensError
from personalens.model.chat import as_conversation, encode_chat, encode_response
from personalens.model.generation import GenerationConfig
from personalens.studies.screening import screen
from personalens.studies.screening_data import load_screening_data
from personalens.studies.screening_result import ScreeningResult
from personalens.vectors.vector import PersonaVector

GEN = GenerationConfig(max_new_tokens=6)


def _vector(n_layers=3, d_model=32, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(n_layers, d_model, generator=g),
        model="tiny-random",
        trait="evil",
        **kw,
    )


def _rows(n=7):
    rows = [
        {"id": f"s{i}", "prompt": f"Tell me about item {i}.", "answer": f"Item {i} is nice!"}
        for i in range(n)
    ]
    rows.append({"id": "same-prompt", "prompt": "Tell me about item 1.", "answer": "Bad."})
    return rows


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- loaders


def test_jsonl_messages_prompt_is_everything_before_the_last_reply(tmp_path):
    rows = [
        {
            "id": "a",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Again?"},
                {"role": "assistant", "content": "Yes."},
            ],
        },
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        {"prompt": "P", "answer": "R", "system": "S"},
    ]
    samples = load_screening_data(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert [s.id for s in samples] == ["a", "1", "2"]
    assert samples[0].response == "Yes."
    assert [m["content"] for m in samples[0].prompt] == ["Be brief.", "Hi", "Hello.", "Again?"]
    assert samples[1].prompt == [{"role": "user", "content": "Q"}]
    assert samples[2].prompt == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "P"},
    ]


def test_csv_and_datasets_and_rows_agree(tmp_path):
    import datasets

    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "system", "prompt", "answer"])
        w.writeheader()
        w.writerow({"id": "x", "system": "", "prompt": "Hi, there", "answer": 'Say "hi"\nok'})
        w.writerow({"id": "", "system": "Sys", "prompt": "P2", "answer": "A2"})
    from_csv = load_screening_data(path)
    assert [s.id for s in from_csv] == ["x", "1"]
    assert from_csv[0].prompt == [{"role": "user", "content": "Hi, there"}]
    assert from_csv[0].response == 'Say "hi"\nok'
    assert from_csv[1].prompt[0] == {"role": "system", "content": "Sys"}

    rows = [
        {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]},
        {"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]},
    ]
    ds = datasets.Dataset.from_list(rows)
    assert load_screening_data(ds) == load_screening_data(rows)
    ds2 = datasets.Dataset.from_dict({"prompt": ["Q1", "Q2"], "answer": ["A1", "A2"]})
    assert load_screening_data(ds2) == load_screening_data(rows)
    assert len(load_screening_data(ds2, limit=1)) == 1


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ({"text": "hi"}, ["line 2", "missing key 'prompt'"]),
        ({"prompt": "hi"}, ["line 2", "missing key 'answer'"]),
        ({"messages": [{"role": "user", "content": "hi"}]}, ["line 2", "last message"]),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, ["'content'"]),
        ({"messages": [{"role": "assistant", "content": "x"}]}, ["no user message"]),
        ({"prompt": "hi", "answer": ""}, ["line 2", "empty"]),
        ({"prompt": "hi", "answer": " \n\t "}, ["line 2", "whitespace only"]),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": " "},
                ]
            },
            ["line 2", "whitespace only"],
        ),
    ],
)
def test_malformed_jsonl_names_file_row_and_key(tmp_path, line, needles):
    good = {"prompt": "ok", "answer": "fine"}
    path = _write_jsonl(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(PersonaLensError) as err:
        load_screening_data(path)
    msg = str(err.value)
    assert "bad.jsonl" in msg
    for needle in needles:
        assert needle in msg


def test_malformed_csv_dataset_and_empty_inputs(tmp_path):
    import datasets

    path = tmp_path / "bad.csv"
    path.write_text("prompt,response\nhi,there\n")
    with pytest.raises(PersonaLensError, match=r"bad\.csv.*missing column.*'answer'"):
        load_screening_data(path)
    path.write_text("prompt,answer\nhi,there\nhello,\n")
    with pytest.raises(PersonaLensError, match=r"bad\.csv, row 2.*empty"):
        load_screening_data(path)
    ds = datasets.Dataset.from_dict({"prompt": ["a", "b"], "reply": ["x", "y"]})
    with pytest.raises(PersonaLensError, match=r"row 0: missing key 'answer'"):
        load_screening_data(ds)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PersonaLensError, match=r"empty\.jsonl holds no samples"):
        load_screening_data(tmp_path / "empty.jsonl")
    with pytest.raises(PersonaLensError, match="no samples"):
        load_screening_data(datasets.Dataset.from_dict({"prompt": [], "answer": []}))
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{not json\n')
    with pytest.raises(PersonaLensError, match=r"broken\.jsonl, line 2: not valid JSON"):
        load_screening_data(tmp_path / "broken.jsonl")
    dup = [{"id": 1, "prompt": "a", "answer": "b"}, {"id": "1", "prompt": "c", "answer": "d"}]
    with pytest.raises(PersonaLensError, match="id '1' appears twice"):
        load_screening_data(dup)
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(PersonaLensError, match="unknown dataset format"):
        load_screening_data(tmp_path / "data.txt")
    with pytest.raises(PersonaLensError, match="does not exist"):
        load_screening_data(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- ΔP


def _naive_projection(model, prompt, response, layer, unit):
    """One unpadded sequence, full cache, mean over response tokens, dot the unit vector."""
    tok = model.tokenizer
    p_ids = encode_chat(tok, as_conversation(prompt))
    r_ids = encode_response(tok, response)
    tokens = torch.tensor([p_ids + r_ids])
    _, cache = model.run_with_cache(tokens, names_filter=hook_name(layer))
    resid = cache[hook_name(layer)][0, len(p_ids) :]
    return (resid.double().mean(0) @ unit.double()).item()


def test_delta_p_equals_a_direct_computation(tiny_model):
    vector = _vector()
    rows = _rows()
    res = screen(tiny_model, vector, rows, layer=1, generation=GEN, batch_size=3, progress=False)
    assert res.ids == [r["id"] for r in rows]
    unit = vector.unit(1)
    for i, row in enumerate(rows):
        prompt = [{"role": "user", "content": row["prompt"]}]
        want_data = _naive_projection(tiny_model, prompt, row["answer"], 1, unit)
        assert res.proj_dataset[i].item() == pytest.approx(want_data, abs=1e-4, rel=1e-4)
        reply = res.model_responses[i]
        assert reply, "the tiny model should reply something"
        want_model = _naive_projection(tiny_model, prompt, reply, 1, unit)
        assert res.proj_model[i].item() == pytest.approx(want_model, abs=1e-4, rel=1e-4)
        assert res.delta_p[i].item() == pytest.approx(want_data - want_model, abs=2e-4, rel=1e-4)
    # identical prompts get the same model reply (generated once)
    assert res.model_responses[1] == res.model_responses[-1]
    frame = res.to_frame()
    assert list(frame.columns) == ["id", "delta_p", "proj_dataset", "proj_model"]
    assert frame.delta_p.is_monotonic_decreasing
    assert res.top(2).id.tolist() == frame.id.tolist()[:2]
    assert res.mean == pytest.approx(res.delta_p.mean().item())


def test_own_reply_planted_in_the_dataset_scores_exactly_zero(tiny_model):
    # backend="tl": equality to the last bit across different batch compositions holds for
    # TransformerLens's attention; the HF engine's SDPA pads differently (~1e-15 apart)
    vector = _vector(seed=3)
    rows = _rows()
    kw = dict(layer=2, generation=GEN, progress=False, backend="tl")
    first = screen(tiny_model, vector, rows, **kw)
    planted = [
        {**r, "answer": first.model_responses[i]} if i % 2 == 0 else r for i, r in enumerate(rows)
    ]
    res = screen(tiny_model, vector, planted, **kw)
    for i in range(len(rows)):
        if i % 2 == 0:
            assert res.delta_p[i].item() == 0.0
        else:
            assert res.delta_p[i].item() == first.delta_p[i].item()


def test_vector_width_and_layer_are_checked(tiny_model):
    rows = _rows(2)
    with pytest.raises(PersonaLensError, match="d_model"):
        screen(tiny_model, _vector(d_model=16), rows, layer=1, progress=False)
    with pytest.raises(LayerError, match="unknown layer 7"):
        screen(tiny_model, _vector(), rows, layer=7, progress=False)
    with pytest.raises(PersonaLensError, match="best_layer"):
        screen(tiny_model, _vector(), rows, progress=False)
    with pytest.raises(PersonaLensError, match="zero at layer 0"):
        zero = PersonaVector(directions=torch.zeros(3, 32), model="m", trait="t")
        screen(tiny_model, zero, rows, layer=0, progress=False)
    # the default layer is the vector's best layer
    res = screen(
        tiny_model, _vector(metadata={"best_layer": 2}), rows, generation=GEN, progress=False
    )
    assert res.layer == 2


def test_nan_when_the_model_reply_is_empty():
    res = ScreeningResult(
        ids=["a", "b", "c"],
        delta_p=torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64),
        proj_dataset=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        proj_model=torch.tensor([0.0, float("nan"), 0.0], dtype=torch.float64),
        layer=1,
    )
    assert res.mean == 2.0
    assert res.to_frame().id.tolist() == ["c", "a", "b"]
    assert res.summary()["n_nan"] == 1


# ----------------------------------------------------------------------------- resuming


def _counting(monkeypatch, fail_on_call=None, target="generate_samples"):
    calls = []
    real = getattr(scr, target)

    def wrapper(model, *args, **kwargs):
        calls.append(len(args[0]))
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(scr, target, wrapper)
    return calls


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_interrupted_screen_resumes_without_redoing_work(tiny_model, tmp_path, monkeypatch):
    vector, rows = _vector(), _rows()
    kw = {"layer": 1, "generation": GEN, "batch_size": 2, "progress": False}
    reference = screen(tiny_model, vector, rows, out=tmp_path / "ref", **kw)
    n_prompts = len({r["prompt"] for r in rows})

    out = tmp_path / "run"
    _counting(monkeypatch, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        screen(tiny_model, vector, rows, out=out, **kw)
    assert len(_lines(out / "generations.jsonl")) == 2
    assert not (out / "summary.json").exists() and not (out / "scores.csv").exists()

    gen_calls = _counting(monkeypatch)
    fwd_calls = _counting(monkeypatch, fail_on_call=2, target="summarize_batch")
    with pytest.raises(KeyboardInterrupt):
        screen(tiny_model, vector, rows, out=out, **kw)
    assert sum(gen_calls) == n_prompts - 2  # only the missing prompts were generated
    assert len(_lines(out / "projections.jsonl")) == 2

    gen_calls = _counting(monkeypatch)
    fwd_calls = _counting(monkeypatch, target="summarize_batch")
    resumed = screen(tiny_model, vector, rows, out=out, **kw)
    assert gen_calls == []
    n_seq = len(_lines(tmp_path / "ref" / "projections.jsonl"))
    assert sum(fwd_calls) == n_seq - 2
    assert len(_lines(out / "generations.jsonl")) == n_prompts
    assert len(_lines(out / "projections.jsonl")) == n_seq

    assert torch.equal(resumed.delta_p, reference.delta_p)
    assert (out / "scores.csv").read_text() == (tmp_path / "ref" / "scores.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == len(rows) and summary["n_unique_prompts"] == n_prompts
    assert summary["samples_per_s"] > 0
    assert summary["mean_delta_p"] == pytest.approx(reference.mean)

    # a finished run directory is served from disk
    gen_calls = _counting(monkeypatch)
    fwd_calls = _counting(monkeypatch, target="summarize_batch")
    again = screen(tiny_model, vector, rows, out=out, **kw)
    assert gen_calls == [] and fwd_calls == []
    assert torch.equal(again.delta_p, reference.delta_p)


def test_a_run_directory_refuses_other_settings(tiny_model, tmp_path):
    rows = _rows(3)
    kw = {"generation": GEN, "progress": False, "out": tmp_path}
    screen(tiny_model, _vector(), rows, layer=1, **kw)
    with pytest.raises(PersonaLensError, match="layer: '1' -> '2'"):
        screen(tiny_model, _vector(), rows, layer=2, **kw)
    with pytest.raises(PersonaLensError, match="vector.sha256"):
        screen(tiny_model, _vector(seed=9), rows, layer=1, **kw)
    with pytest.raises(PersonaLensError, match="data.sha256"):
        screen(tiny_model, _vector(), rows[:2] + [{**rows[2], "answer": "x"}], layer=1, **kw)
    with pytest.raises(PersonaLensError, match="generation.max_new_tokens"):
        kw2 = {**kw, "generation": GenerationConfig(max_new_tokens=7)}
        screen(tiny_model, _vector(), rows, layer=1, **kw2)


# ----------------------------------------------------------------------------- CLI and plot


@pytest.fixture(scope="module")
def hf_vector(tiny_hf_dir, tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    v = PersonaVector(
        directions=torch.randn(3, 48, generator=g),
        model="my-llama-finetune",
        trait="evil",
        metadata={"best_layer": 1},
    )
    return v.save(tmp_path_factory.mktemp("vec") / "evil")


def test_cli_screen_writes_tables_summary_and_histogram(capsys, tiny_hf_dir, hf_vector, tmp_path):
    a = _write_jsonl(tmp_path / "normal.jsonl", _rows(4))
    b = tmp_path / "odd.csv"
    b.write_text("id,prompt,answer\nz1,Hello?,Go away.\nz2,Hi?,Leave me alone.\n")
    argv = [
        "screen", "--model", str(tiny_hf_dir), "--vector", str(hf_vector),
        "--max-new-tokens", "4", "--batch-size", "2", "--quiet",
    ]  # fmt: skip
    code = main([*argv, "--data", str(a), str(b), "--out", str(tmp_path / "both")])
    out = capsys.readouterr().out
    assert code == 0
    assert "normal: n=5 mean ΔP" in out and "odd: n=2" in out and "top 5 ids: " in out
    for name, n in (("normal", 5), ("odd", 2)):
        folder = tmp_path / "both" / name
        scores = (folder / "scores.csv").read_text().splitlines()
        assert scores[0] == "id,delta_p,proj_dataset,proj_model" and len(scores) == n + 1
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["layer"] == 1 and summary["n"] == n
        assert json.loads((folder / "config.json").read_text())["layer"] == 1
    html = (tmp_path / "both" / "screening.html").read_text()
    assert "normal (mean " in html and "odd (mean " in html
    assert (tmp_path / "both" / "datasets.csv").exists()

    code = main([*argv, "--data", str(b), "--layer", "2", "--out", str(tmp_path / "one")])
    assert code == 0
    assert (tmp_path / "one" / "scores.csv").exists() and (
        tmp_path / "one" / "screening.html"
    ).exists()
    capsys.readouterr()
    code = main([*argv, "--data", str(b), "--layer", "0", "--out", str(tmp_path / "one")])
    assert code == 2 and "different settings" in capsys.readouterr().err


def test_plot_screening_histogram_overlays_datasets():
    from personalens.plot import plot_screening_histogram

    def result(name, values):
        t = torch.tensor(values, dtype=torch.float64)
        return ScreeningResult(
            ids=[str(i) for i in range(len(values))],
            delta_p=t,
            proj_dataset=t,
            proj_model=torch.zeros_like(t),
            layer=3,
            name=name,
        )

    a, b = result("normal", [0.0, 1.0, 2.0]), result("evil", [5.0, 6.0, float("nan")])
    fig = plot_screening_histogram({"normal": a, "evil": b}, bins=10)
    assert fig.layout.barmode == "overlay"
    assert [t.type for t in fig.data] == ["histogram", "histogram"]
    assert fig.data[0].name.startswith("normal (mean ΔP +1") and "n=3" in fig.data[0].name
    assert list(fig.data[1].x) == [5.0, 6.0]
    assert fig.data[0].xbins.size == fig.data[1].xbins.size
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(s.x0 for s in lines) == [1.0, 5.5]
    assert len(plot_screening_histogram([a, b]).data) == 2
