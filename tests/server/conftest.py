"""Opt-in tests against a real OpenAI-compatible server: llama.cpp's, from ``llama-cpp-python``,
serving the embedded model's GGUF file on 127.0.0.1.

They run only with ``PERSONALENS_TEST_SERVER=1`` (``make test-server`` sets it after
installing ``llama-cpp-python[server]`` into the virtualenv); otherwise every test here is
skipped, so the default ``make test`` never starts a server, whatever is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from personalens.model.embedded import embedded_gguf_path

ENABLE_ENV = "PERSONALENS_TEST_SERVER"
MODEL_ALIAS = "smollm2-135m-instruct"
N_CTX = 2048
START_TIMEOUT_S = 180.0
HERE = Path(__file__).resolve().parent

# no proxy from the environment may sit between the tests and 127.0.0.1
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "").strip() == "1"


def pytest_collection_modifyitems(config, items):
    if enabled():
        return
    skip = pytest.mark.skip(reason=f"opt-in: `make test-server` (or {ENABLE_ENV}=1)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with _DIRECT.open(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def post_json(url: str, body: dict, timeout: float = 120.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with _DIRECT.open(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def _log_tail(path: Path, n: int = 40) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def _wait_until_serving(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"llama.cpp server exited with code {proc.returncode} before serving:\n"
                + _log_tail(log_path)
            )
        try:
            if get_json(f"{url}/models", timeout=2.0).get("data"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(
        f"llama.cpp server not serving after {START_TIMEOUT_S:.0f} s:\n" + _log_tail(log_path)
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a llama.cpp server on the embedded GGUF; the
    server is stopped at the end of the session, whatever happened."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(
            f"{ENABLE_ENV}=1 but llama_cpp is not installed in this environment. Fix: run "
            "`make test-server`, which installs llama-cpp-python[server] into .venv first."
        )
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_gguf_path()),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--logits_all",
        "True",  # logprobs need the logits of every position (the server's default, made explicit)
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_until_serving(proc, url, log_path)
        yield url
    finally:
        _stop(proc)
