"""A **GScore-like** judge (after GoodDrag §4.2, not the paper's Gemini setup): a large multimodal model behind any
OpenAI-compatible ``/chat/completions`` endpoint rates how natural an edited image looks next to its original, 1–10.

Differences from the paper, on purpose: our own prompt; one edited image per request; the two images are shown in a
random order per repeat (the paper's fixed order invites position bias) and the prompt says which is which; scores
are parsed from a fixed "SCORE: n" line with fallbacks; the mean ± std over ``repeats`` is reported.
Only the standard library is used (urllib). Endpoint, model and key come from options or ``DRAGKIT_JUDGE_URL``,
``DRAGKIT_JUDGE_MODEL`` and ``DRAGKIT_JUDGE_API_KEY`` (falling back to ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import re
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..io import image_bytes
from ..types import DragError

logger = logging.getLogger(__name__)

PROMPT = (
    "You are judging the result of a point-based image edit ('drag editing'), where parts of a photo were moved to "
    "new positions. The ORIGINAL image is the unedited reference; the EDITED image is the result. In this message "
    "the {first} image comes first and the {second} image second. Do not judge whether the edit was a good idea or "
    "how far things moved; judge only how natural and artifact-free the EDITED image looks, taking the ORIGINAL as "
    "the standard of quality: look for warped or melted shapes, broken anatomy or geometry, smeared textures, "
    "unnatural colours, blur or pixelation, seams and inconsistent lighting, and for lost detail or identity. "
    "Give one short justification sentence, then on the last line write exactly 'SCORE: n' with n an integer from "
    "1 (severe artifacts, clearly fake) to 10 (seamless, indistinguishable from a real photo of the same quality)."
)
_SCORE_LINE = re.compile(r"score\s*[:=]\s*\**\s*(10|[1-9])(?:\.\d+)?\s*(?:/\s*10)?", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"\b(10|[1-9])(?:\.\d+)?\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def parse_score(text: str) -> Optional[float]:
    """The 1–10 score in a reply: the last "SCORE: n" line, else the last "n/10" / "n out of 10", else a reply that is
    just a number; ``None`` when no score can be read."""
    if not isinstance(text, str):
        return None
    for pattern in (_SCORE_LINE, _OUT_OF_TEN):
        found = pattern.findall(text)
        if found:
            return float(found[-1])
    bare = text.strip().strip("*. ")
    if re.fullmatch(r"(10|[1-9])(\.0+)?", bare):
        return float(bare)
    return None


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(image_bytes(image)).decode("ascii")


@dataclass
class JudgeScore:
    """Scores of the repeats that could be parsed, with their mean ± std (population std; 0 for one score)."""

    scores: list[float]
    failures: int = 0
    replies: list[str] = field(default_factory=list)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def std(self) -> Optional[float]:
        return statistics.pstdev(self.scores) if self.scores else None

    def to_json(self) -> dict:
        return {"gscore_like": self.mean, "gscore_like_std": self.std, "scores": self.scores,
                "failures": self.failures}


@dataclass
class JudgeClient:
    """Client for an OpenAI-compatible chat-completions endpoint (``base_url`` ends before ``/chat/completions``)."""

    base_url: str
    model: str
    api_key: Optional[str] = None
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubled each time (a Retry-After header wins)
    temperature: float = 0.4
    max_tokens: int = 300
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, base_url: Optional[str] = None, model: Optional[str] = None, api_key: Optional[str] = None,
                 **kwargs) -> "JudgeClient":
        base_url = base_url or os.environ.get("DRAGKIT_JUDGE_URL")
        model = model or os.environ.get("DRAGKIT_JUDGE_MODEL")
        api_key = api_key or os.environ.get("DRAGKIT_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not base_url or not model:
            raise DragError("the GScore-like judge needs an endpoint and a model: --judge-url/--judge-model "
                            "or DRAGKIT_JUDGE_URL/DRAGKIT_JUDGE_MODEL")
        return cls(base_url.rstrip("/"), model, api_key, **kwargs)

    def messages(self, original, edited, edited_first: bool) -> list[dict]:
        names = ("EDITED", "ORIGINAL") if edited_first else ("ORIGINAL", "EDITED")
        images = (edited, original) if edited_first else (original, edited)
        content = [{"type": "text", "text": PROMPT.format(first=names[0], second=names[1])}]
        for name, image in zip(names, images):
            content.append({"type": "text", "text": f"{name} image:"})
            content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
        return [{"role": "user", "content": content}]

    def complete(self, messages: list[dict]) -> str:
        """One chat completion's text, retrying 429/5xx/timeouts with exponential backoff."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                return str(reply["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUS or attempt == self.retries:
                    raise DragError(f"judge endpoint answered HTTP {exc.code}") from None
                wait = _retry_after(exc) or delay
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise DragError(f"judge endpoint unreachable ({type(exc).__name__})") from None
                wait = delay
            except (ValueError, KeyError, IndexError, TypeError):
                raise DragError("judge endpoint sent a reply that is not a chat completion") from None
            logger.info("judge: retry %d in %.1f s", attempt + 1, wait)
            self.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def score(self, original, edited, repeats: int = 10, rng: Optional[random.Random] = None) -> JudgeScore:
        """Ask ``repeats`` times (order drawn per repeat); unparseable replies and failed requests are failures."""
        rng = rng or random.Random(0)
        result = JudgeScore([])
        for _ in range(repeats):
            try:
                text = self.complete(self.messages(original, edited, edited_first=rng.random() < 0.5))
            except DragError as exc:
                logger.warning("judge: %s", exc)
                result.failures += 1
                continue
            result.replies.append(text)
            value = parse_score(text)
            if value is None:
                result.failures += 1
            else:
                result.scores.append(value)
        return result


def _retry_after(exc: urllib.error.HTTPError) -> Optional[float]:
    try:
        return max(0.0, float(exc.headers.get("Retry-After", "")))
    except (TypeError, ValueError, AttributeError):
        return None
