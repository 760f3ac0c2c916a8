"""A scriptable fake OpenAI-compatible chat-completions server on 127.0.0.1 (an ephemeral port)
for the tests of the judge, the LLM steering policy and pairwise ranking; nothing leaves the
machine. The ``fake`` and ``openai_env`` fixtures are in tests/unit/conftest.py."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from personalens.judges.openai_client import APIConfig

FAKE_KEY = "sk-test-PERSONALENS-0123456789abcdefSECRET"
KEY_ENV = "PERSONALENS_TEST_JUDGE_KEY"
# what a test clears so that no real endpoint, key or proxy from the environment is used
JUDGE_ENV = (
    "PERSONALENS_JUDGE_BASE_URL",
    "PERSONALENS_JUDGE_MODEL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
MODEL = "fake-judge"
MAX_REQUESTS = 400  # a runaway retry loop fails fast instead of hanging


# ----------------------------------------------------------------------------- fake server


def completion(content: str, top: dict[str, float] | None = None, finish: str = "stop") -> dict:
    """A chat.completion body; ``top`` maps token -> probability for the first token."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish,
        "logprobs": None,
    }
    if top is not None:
        ranked = sorted(top.items(), key=lambda kv: -kv[1])
        choice["logprobs"] = {
            "content": [
                {
                    "token": ranked[0][0],
                    "logprob": math.log(ranked[0][1]),
                    "bytes": None,
                    "top_logprobs": [
                        {"token": t, "logprob": math.log(p), "bytes": None} for t, p in ranked
                    ],
                }
            ]
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


def error_body(message: str, kind: str = "server_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def distribution(prompt: str) -> dict[str, float]:
    """The scripted judge: ``EXPECT=k`` -> 60% "k", 40% "k+10" (score k+4); ``MASS=m`` -> m on
    "70", the rest on words; ``REFUSE`` -> mostly "REFUSAL"; otherwise all on "50"."""
    if m := re.search(r"EXPECT=(\d+)", prompt):
        k = int(m.group(1))
        return {str(k): 0.6, str(k + 10): 0.4}
    if m := re.search(r"MASS=([0-9.]+)", prompt):
        mass = float(m.group(1))
        return {"70": mass, "REFUSAL": (1 - mass) / 2, "Sorry": (1 - mass) / 2}
    if "REFUSE" in prompt:
        return {"REFUSAL": 0.9, "I": 0.05, "50": 0.05}
    return {"50": 1.0}


def scorer(body: dict, n: int):
    prompt = body["messages"][-1]["content"]
    if m := re.search(
        r"DELAY=(\d+)", prompt
    ):  # later items answer sooner: shuffles completion order
        time.sleep(int(m.group(1)) / 1000)
    top = distribution(prompt)
    return 200, completion(max(top, key=top.get), top, "length")


def fail_first(k: int, status: int, then=scorer):
    def respond(body, n):
        if n < k:
            return status, error_body(f"scripted failure {n + 1}")
        return then(body, n)

    return respond


def json_replies(*texts: str):
    """Reply with ``texts`` in turn (the last one repeats)."""

    def respond(body, n):
        return 200, completion(texts[min(n, len(texts) - 1)])

    return respond


def no_logprobs(body, n):
    """200 with a number as content but no logprobs (a server that ignores ``logprobs``)."""
    return 200, completion("80")


def words_only(body, n):
    """200 with logprobs whose top tokens are all words: no numeric token."""
    return 200, completion("Hello", {"Hello": 0.7, "Hi": 0.2, "Sure": 0.1})


def html_page(body, n):
    """200 with a web page (``text/html``): a base URL that points at a website or a proxy."""
    return 200, "<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"


def garbage_json(body, n):
    """200 that claims ``application/json`` but sends a body that is not JSON."""
    return 200, "<html><body>502 Bad Gateway</body></html>", "application/json"


def wrong_json(body, n):
    """200 with JSON that is not a chat completion (another API's reply)."""
    return 200, {"status": "ok", "detail": "this is not a chat completion"}


class FakeOpenAI:
    """A scriptable OpenAI-compatible server: ``respond(body, n) -> (status, json)``, or
    ``(status, raw text, content type)`` for a body that is not JSON."""

    def __init__(self):
        self.respond = scorer
        self.bodies: list[dict] = []
        self.arrivals: list[float] = []  # time.monotonic() at each request
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def n_requests(self) -> int:
        return len(self.bodies)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    timeout = 10

    def do_POST(self):  # noqa: N802 - http.server's naming
        fake = self.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with fake.lock:
            n = len(fake.bodies)
            fake.bodies.append(body)
            fake.arrivals.append(time.monotonic())
            fake.auth.append(self.headers.get("Authorization"))
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if self.path != "/v1/chat/completions":
                status, payload = 404, error_body(f"no route {self.path}", "not_found")
            elif n >= MAX_REQUESTS:
                status, payload = 400, error_body("test request budget exhausted", "test")
            else:
                status, *payload = fake.respond(body, n)
                payload = payload[0] if len(payload) == 1 else tuple(payload)
        finally:
            with fake.lock:
                fake.in_flight -= 1
        content_type = "application/json"
        if isinstance(payload, tuple):  # (raw text, content type)
            payload, content_type = payload
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def config(url: str, tmp_path, **kw) -> APIConfig:
    opts = dict(
        base_url=url,
        model=MODEL,
        api_key_env=KEY_ENV,
        timeout=5.0,
        max_retries=3,
        concurrency=8,
        cache_path=str(tmp_path / "judge_cache.sqlite"),
    )
    opts.update(kw)
    return APIConfig(**opts)
