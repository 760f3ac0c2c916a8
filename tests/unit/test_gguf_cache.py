"""The converted-GGUF cache is keyed by the file's content, not by its path."""

from __future__ import annotations

import json
import shutil

from personalens.model import gguf_convert


def test_copies_of_one_file_share_a_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALENS_CACHE", str(tmp_path / "cache"))
    a = tmp_path / "venv1" / "model.gguf"
    a.parent.mkdir()
    a.write_bytes(b"GGUF" + bytes(range(256)) * 100)
    b = tmp_path / "venv2" / "model.gguf"
    b.parent.mkdir()
    shutil.copy(a, b)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF different")
    assert gguf_convert._gguf_cache_dir(a) == gguf_convert._gguf_cache_dir(b)
    assert gguf_convert._gguf_cache_dir(a) != gguf_convert._gguf_cache_dir(other)
    index = json.loads((tmp_path / "cache" / "models" / "gguf-sha256.json").read_text())
    assert len(index) == 3  # each path hashed once ...

    calls = []
    monkeypatch.setattr(gguf_convert, "file_sha256", lambda p: calls.append(p) or "x" * 64)
    gguf_convert._gguf_cache_dir(a)
    assert calls == []  # ... and remembered
    a.write_bytes(b"GGUF changed")  # a new size/mtime is hashed again
    assert gguf_convert._gguf_cache_dir(a).name == "model-xxxxxxxxxxxx"
