"""A tiny byte-level tokenizer with a ChatML template, built in memory: no files, no downloads.

For random-weight models (the test suite's tiny models, the benchmarks' real shapes), where
the tokens carry no meaning but the chat template, padding and special tokens must behave like
a real chat model's.
"""

from __future__ import annotations

import tempfile
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer(prefix: str = "personalens-tok-") -> Any:
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML template, padding on
    the left. It is saved to a temporary folder (``prefix``) and reloaded from there, because
    TransformerLens reloads tokenizers by ``name_or_path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIALS,
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    folder = tempfile.mkdtemp(prefix=prefix)
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, padding_side="left")
