# SPDX-License-Identifier: Apache-2.0
"""A local OpenAI-compatible provider for the real-clients e2e tests.

``FakeOpenAI`` serves ``POST /v1/chat/completions`` on an ephemeral loopback port with the JSON
shape the OpenAI API answers (``chat.completion`` object, ``usage`` with
``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``), so
the real ``openai`` client and the instrumentations wrapping it run unmodified.  The usage of
each answer is taken from the next entry of ``usages`` (cycled); every request body is recorded.
A request with ``"stream": true`` is answered as server-sent events in OpenAI's chunk format,
the usage in a final choice-less chunk when ``stream_options.include_usage`` asks for it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI", "Usage"]


@dataclass(frozen=True)
class Usage:
    """Token usage the fake provider reports for one answer (OpenAI counting: prompt tokens
    include the cached ones)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``usage`` object of a chat completion."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


class FakeOpenAI:
    """An OpenAI-compatible chat-completions server on ``127.0.0.1:0``.

    Args:
        response_model: the dated model name answers carry (as OpenAI resolves aliases).
        usages: the usage of successive answers, cycled.
    """

    def __init__(self, response_model: str, usages: Sequence[Usage]) -> None:
        self.response_model = response_model
        self.requests: list[dict[str, Any]] = []
        self._usages = itertools.cycle(usages)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client (httpx) expects

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    self._reply(400, {"error": {"message": "invalid JSON", "type": "invalid"}})
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._reply(404, {"error": {"message": f"no route {self.path}"}})
                    return
                answer = fake._answer(body)
                if body.get("stream"):
                    self._stream(
                        answer, bool((body.get("stream_options") or {}).get("include_usage"))
                    )
                else:
                    self._reply(200, answer)

            def _stream(self, answer: dict[str, Any], include_usage: bool) -> None:
                # The chunk sequence OpenAI streams: role + content deltas, a finish chunk, then
                # (stream_options.include_usage) a choice-less chunk carrying the usage.
                base = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint")}
                base["object"] = "chat.completion.chunk"
                text = answer["choices"][0]["message"]["content"]
                deltas: list[tuple[dict[str, Any], str | None]] = [
                    ({"role": "assistant", "content": ""}, None),
                    *(({"content": word}, None) for word in re.findall(r"\S+\s*", text)),
                    ({}, "stop"),
                ]
                chunks = [
                    {
                        **base,
                        "choices": [{"index": 0, "delta": d, "finish_reason": f, "logprobs": None}],
                        "usage": None,
                    }
                    for d, f in deltas
                ]
                if include_usage:
                    chunks.append({**base, "choices": [], "usage": answer["usage"]})
                raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
                raw += b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            usage = next(self._usages)
            n = next(self._ids)
        return {
            "id": f"chatcmpl-fake{n}",
            "object": "chat.completion",
            "created": 1_764_000_000 + n,
            "model": self.response_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer {n}", "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage.to_json(),
            "system_fingerprint": "fp_local",
            "service_tier": "default",
        }

    @property
    def base_url(self) -> str:
        """What to pass as the ``openai`` client's ``base_url``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
