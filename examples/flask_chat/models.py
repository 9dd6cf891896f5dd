"""The chat's models: a built-in fake one, and any OpenAI-compatible chat-completions endpoint.

A model turns a conversation (OpenAI-style ``{"role", "content"}`` messages,
the user's new message last) into a generator of text pieces. The generator
runs as the source of a resumable stream, so stopping the stream closes it at
its next ``yield``; for the OpenAI-compatible model that closes the HTTP
connection to the endpoint, which cancels the generation there.

:func:`model_from_env` picks one from the environment:

==================================  ===========================================
``OPENAI_BASE_URL``                 endpoint base, such as ``https://api.openai.com/v1``
``OPENAI_API_KEY``                  its key; with the URL, selects the real model
``OPENAI_MODEL``                    model name (default ``gpt-4o-mini``)
``FAKE_MODEL_TOKENS_PER_SECOND``    the fake model's rate (default 20; 0 = no delay)
==================================  ===========================================
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import requests

__all__ = [
    "FAIL_COMMAND",
    "FakeModel",
    "Model",
    "ModelError",
    "OpenAICompatibleModel",
    "fake_answer",
    "fake_tokens",
    "model_from_env",
]

logger = logging.getLogger(__name__)

Message = Mapping[str, str]

DEFAULT_TOKENS_PER_SECOND = 20.0
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
#: A message containing this makes the fake model fail midway, to show what a failed answer looks like.
FAIL_COMMAND = "/fail"
#: Words the fake model writes before it fails.
FAIL_AFTER_WORDS = 12


class ModelError(RuntimeError):
    """The model could not answer. Its message is fit for the user to read: it never holds secrets or bodies."""


class Model(Protocol):
    """Something that answers a conversation, piece by piece."""

    #: What the start-up banner says about it (never a secret).
    description: str

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        """The answer to ``messages`` (the user's new message last), as text pieces."""
        ...


def fake_answer(message: str) -> str:
    """The fake model's full answer to ``message`` (Markdown); the same text every time."""
    said = " ".join(message.split()) or "nothing"
    return (
        f"You said: \u201c{said}\u201d.\n\n"
        "This answer comes from the **built-in fake model**. It streams a fixed text, one word at a time, "
        "so that you can watch a resumable stream at work:\n\n"
        "- **Reload** the page while it is still writing: the answer picks up where it was, "
        "with nothing missing and nothing said twice.\n"
        "- **Open this chat in a second tab**: both tabs show the same answer as it grows.\n"
        "- **Press Stop** in either tab: the answer stops for everyone.\n\n"
        "Every word is written to the log as soon as it is produced, so any worker process can serve "
        f"the rest of it. Send a message with `{FAIL_COMMAND}` in it to see a failed answer."
    )


def fake_tokens(message: str) -> list[str]:
    """The pieces the fake model streams for ``message``: each word with the whitespace after it."""
    return re.findall(r"\S+\s*", fake_answer(message))


class FakeModel:
    """Streams :func:`fake_answer` for the user's last message, ``tokens_per_second`` pieces a second.

    Works offline and is deterministic, for demos and tests. A rate of 0 streams without delay. A
    message containing :data:`FAIL_COMMAND` fails after :data:`FAIL_AFTER_WORDS` words.
    """

    def __init__(self, tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND) -> None:
        if not tokens_per_second >= 0:
            raise ValueError(f"tokens_per_second must be 0 or more, not {tokens_per_second!r}")
        self.tokens_per_second = tokens_per_second
        rate = f"{tokens_per_second:g} tokens/s" if tokens_per_second else "no delay"
        self.description = f"the built-in fake model ({rate})"

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        delay = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        message = messages[-1]["content"]
        for i, token in enumerate(fake_tokens(message)):
            if FAIL_COMMAND in message and i == FAIL_AFTER_WORDS:
                raise ModelError("the fake model failed, as the message asked")
            if delay:
                time.sleep(delay)
            yield token


class OpenAICompatibleModel:
    """Streams from ``POST {base_url}/chat/completions`` with ``"stream": true``.

    Reads the ``data:`` lines of ``chat.completion.chunk`` events and yields
    each ``choices[0].delta.content``. An HTTP error, or an ``error`` object in
    the stream, raises :class:`ModelError`, which fails the answer; the
    endpoint's own words go to the log, not into the exception.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self._api_key = api_key
        self.description = f"the OpenAI-compatible model {model!r} at {self.url}"

    def __repr__(self) -> str:
        return f"<OpenAICompatibleModel {self.model!r} at {self.url}>"

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        payload: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages], "stream": True}
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "text/event-stream"}
        # Leaving the `with` (the answer ended, failed, or was stopped: GeneratorExit) closes the connection.
        with requests.post(self.url, json=payload, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code != 200:
                logger.warning("the model endpoint answered %d: %s", response.status_code, response.text[:300])
                raise ModelError(f"the model endpoint answered {response.status_code}")
            for line in response.iter_lines():
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip().decode("utf-8", "replace")
                if data == "[DONE]":
                    return
                content = _delta_content(json.loads(data))
                if content:
                    yield content


def _delta_content(chunk: object) -> str | None:
    """The text of one ``chat.completion.chunk``; raises for an error object."""
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk:
        error = chunk["error"]
        detail = error.get("message") if isinstance(error, dict) else error
        logger.warning("the model endpoint reported an error: %s", detail)
        raise ModelError("the model endpoint reported an error")
    choices = chunk.get("choices") or []
    delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else None


def model_from_env(environ: Mapping[str, str] | None = None) -> Model:
    """The OpenAI-compatible model if ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are set, else the fake one."""
    env = os.environ if environ is None else environ
    base_url = env.get("OPENAI_BASE_URL", "").strip()
    api_key = env.get("OPENAI_API_KEY", "").strip()
    if base_url and api_key:
        return OpenAICompatibleModel(base_url, api_key, env.get("OPENAI_MODEL", "").strip() or DEFAULT_OPENAI_MODEL)
    if base_url or api_key:
        logger.warning("set both OPENAI_BASE_URL and OPENAI_API_KEY to use a real model; using the fake one")
    raw = env.get("FAKE_MODEL_TOKENS_PER_SECOND", "").strip()
    try:
        rate = float(raw) if raw else DEFAULT_TOKENS_PER_SECOND
        return FakeModel(rate)
    except ValueError:
        raise ValueError(f"FAKE_MODEL_TOKENS_PER_SECOND must be a number, 0 or more, not {raw!r}") from None
