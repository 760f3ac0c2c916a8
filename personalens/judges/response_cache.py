"""The on-disk cache of LLM replies, so a resumed run re-sends no request it already made.

sqlite3 at ``<cache dir>/judge_cache.sqlite`` (:attr:`APIConfig.cache_path
<personalens.judges.openai_client.APIConfig>`), mapping sha256(server URL, model, request kind
and parameters, full prompt) to the reply's top logprobs or text: the same model name on two
servers shares no entry. Only hashes and usable replies are stored (a reply that scored NaN or
failed its check is not), never the API key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from personalens._io import digest
from personalens.judges.base import JudgeError

MISS = object()  # what ResponseCache.get returns for a key it does not hold


class ResponseCache:
    """A sqlite3 map from request hash to reply (JSON), shared safely by threads and runs."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS replies "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise JudgeError(
                f"cannot open the judge cache {self.path}: {exc}. Fix: set PERSONALENS_CACHE to "
                "a writable folder, or pass cache_path=None to disable the cache."
            ) from None

    @staticmethod
    def key(server: str, model: str, kind: str, params: dict[str, Any], prompt: str) -> str:
        """sha256 of the server's base URL, the model, the request kind and parameters, and the
        full prompt."""
        blob = [server.rstrip("/"), model, kind, params, prompt]
        return digest(json.dumps(blob, sort_keys=True, ensure_ascii=False))

    def get(self, key: str) -> Any:
        """The cached value, or :data:`MISS`."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return MISS if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO replies (key, value, created) VALUES (?, ?, ?)",
                (key, blob, time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
