"""The GScore-like judge against a fake OpenAI-compatible server on 127.0.0.1 (normal, malformed, slow, failing)."""

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from dragkit.metrics.gscore import JudgeClient, data_url, parse_score
from dragkit.types import DragError


class FakeServer:
    """Answers each POST with the next scripted (status, body, delay, headers); records requests."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), json.loads(body)))
                status, reply, delay, headers = outer.script.pop(0) if outer.script else (500, "", 0, {})
                time.sleep(delay)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(text):
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, 0, {}


def client(url, **kw):
    sleeps = []
    c = JudgeClient(url, "judge-model", api_key="sk-test", sleep=sleeps.append, **kw)
    return c, sleeps


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return (Image.fromarray(rng.integers(0, 256, (16, 20, 3), np.uint8)),
            Image.fromarray(rng.integers(0, 256, (16, 20, 3), np.uint8)))


@pytest.mark.parametrize("text,score", [
    ("Smooth result.\nSCORE: 7", 7.0), ("score = 10/10", 10.0), ("**Score:** 8", 8.0), ("I'd say 6 out of 10.", 6.0),
    ("9", 9.0), ("Score: 3\n...on reflection\nSCORE: 4", 4.0), ("no number here", None), ("SCORE: 0", None),
    ("", None), (None, None)])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_normal_replies_randomised_order(images):
    original, edited = images
    with FakeServer([ok(f"fine\nSCORE: {s}") for s in (6, 8, 7, 7, 6, 8)]) as server:
        c, sleeps = client(server.url)
        result = c.score(original, edited, repeats=6, rng=random.Random(1))
    assert result.scores == [6, 8, 7, 7, 6, 8] and result.failures == 0 and not sleeps
    assert result.mean == pytest.approx(7.0) and result.std == pytest.approx((4 / 6) ** 0.5)
    firsts = []
    for path, headers, body in server.requests:
        assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
        assert body["model"] == "judge-model"
        content = body["messages"][0]["content"]
        urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
        labels = [part["text"] for part in content if part["type"] == "text"][1:]
        assert sorted(urls) == sorted([data_url(original), data_url(edited)])
        # the label in front of each image says which one it is
        assert dict(zip(labels, urls)) == {"ORIGINAL image:": data_url(original), "EDITED image:": data_url(edited)}
        firsts.append(labels[0])
    assert set(firsts) == {"ORIGINAL image:", "EDITED image:"}  # both orders were used
    assert result.to_json()["gscore_like"] == pytest.approx(7.0)


def test_malformed_replies_count_as_failures(images):
    script = [(200, "this is not json", 0, {}), (200, {"choices": []}, 0, {}), ok("I cannot rate this."),
              ok("SCORE: 5")]
    with FakeServer(script) as server:
        c, _ = client(server.url)
        result = c.score(*images, repeats=4)
    assert result.scores == [5.0] and result.failures == 3 and result.mean == 5.0 and result.std == 0.0


def test_retries_with_backoff_on_429_and_5xx(images):
    script = [(503, "busy", 0, {}), (429, "slow down", 0, {"Retry-After": "0.25"}), (500, "oops", 0, {}),
              ok("SCORE: 9")]
    with FakeServer(script) as server:
        c, sleeps = client(server.url, backoff=0.5, retries=4)
        result = c.score(*images, repeats=1)
    assert result.scores == [9.0] and sleeps == [0.5, 0.25, 2.0] and len(server.requests) == 4


def test_client_errors_are_not_retried_and_give_up_after_retries(images):
    with FakeServer([(401, "bad key", 0, {})]) as server:
        c, sleeps = client(server.url)
        with pytest.raises(DragError, match="HTTP 401"):
            c.complete(c.messages(*images, edited_first=False))
    assert not sleeps and len(server.requests) == 1
    with FakeServer([(502, "", 0, {})] * 3) as server:
        c, sleeps = client(server.url, retries=2)
        result = c.score(*images, repeats=1)
    assert result.scores == [] and result.failures == 1 and result.mean is None and sleeps == [1.0, 2.0]


def test_slow_server_times_out(images):
    with FakeServer([(200, "{}", 1.5, {}), (200, "{}", 1.5, {})]) as server:
        c, sleeps = client(server.url, timeout=0.2, retries=1)
        start = time.monotonic()
        with pytest.raises(DragError, match="unreachable"):
            c.complete(c.messages(*images, edited_first=True))
    assert time.monotonic() - start < 1.4 and sleeps == [1.0]


def test_from_env(monkeypatch):
    monkeypatch.delenv("DRAGKIT_JUDGE_URL", raising=False)
    monkeypatch.delenv("DRAGKIT_JUDGE_MODEL", raising=False)
    with pytest.raises(DragError, match="judge needs an endpoint"):
        JudgeClient.from_env()
    monkeypatch.setenv("DRAGKIT_JUDGE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("DRAGKIT_JUDGE_MODEL", "m")
    monkeypatch.setenv("DRAGKIT_JUDGE_API_KEY", "k")
    c = JudgeClient.from_env()
    assert (c.base_url, c.model, c.api_key) == ("http://127.0.0.1:9/v1", "m", "k")


def test_report_with_judge_on_a_hand_made_run(tmp_path, images):
    from dragkit.benchmark.report import Evaluators, evaluate_runs, load_run, write_report
    from dragkit.metrics.dai import dai_all

    original, edited = images
    run = tmp_path / "run"
    (run / "s0").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"dataset": "drag100", "method": "m", "dai": "official"}))
    original.save(run / "s0" / "input.png")
    edited.save(run / "s0" / "dragged_image.png")
    request = {"image": "input.png", "prompt": "", "handles": [[3, 4]], "targets": [[6, 4]]}
    (run / "s0" / "result.json").write_text(json.dumps({"sample_id": "s0", "category": None, "request": request,
                                                         "timings": {"total": 2.0}}))
    with FakeServer([ok("SCORE: 4"), ok("SCORE: 6")]) as server:
        ev = Evaluators(("dai", "gscore"), judge_factory=lambda: client(server.url)[0], judge_repeats=2)
        [report] = evaluate_runs([load_run(run)], ev)
    assert report["overall"]["gscore_like"] == 5.0 and report["samples"]["s0"]["gscore_like_std"] == 1.0
    assert report["overall"]["dai_1"] == pytest.approx(dai_all(original, edited, [[3, 4]], [[6, 4]])["dai_1"])
    assert report["seconds_per_sample"] == 2.0 and report["per_category"] == {}
    written = write_report([report], tmp_path / "rep")
    assert [p.name for p in written] == ["report.json", "report.csv", "report.md"]  # no MD/IF, no categories: no plots
    assert "gscore_like" in (tmp_path / "rep" / "report.md").read_text()
