"""The OpenAI-compatible client (goldfish.audit.engines.openai) against a small fake server on the
loopback: retries, the tokenizer check, API keys, what it refuses. The real server: test_engine_vllm.py."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from goldfish.audit.engines.openai import PROBE_TEXT, EngineError, OpenAIEngine
from goldfish.audit.sampling import DecodingRule


class FakeServer:
    """A vLLM-like server: continuations repeat the prompt's last token; every prompt token has
    log-prob -0.25. ``fail_first``: the first N completions answer 503; ``tokens``: what /tokenize
    answers (None: it answers 404); ``token_ids``: whether completions carry token ids."""

    def __init__(self, tokenizer, fail_first=0, tokens="ours", token_ids=True, echo_text=None):
        self.tokenizer, self.fail_first, self.token_ids, self.echo_text = tokenizer, fail_first, token_ids, echo_text
        self.tokens = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"] if tokens == "ours" else tokens
        self.seen, self.lock = [], threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._answer(404, {"detail": "Not Found"})
                self._answer(200, {"data": [{"id": "tiny"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path not in ("/tokenize", "/v1/completions"):  # vLLM's routes; 404 elsewhere
                    return self._answer(404, {"detail": "Not Found"})
                with fake.lock:
                    fake.seen.append((self.path, body, self.headers.get("Authorization")))
                    failing = self.path == "/v1/completions" and fake.fail_first > 0
                    fake.fail_first -= failing
                if failing:
                    return self._answer(503, {"error": "busy"})
                if self.path == "/tokenize":
                    return self._answer(404, {}) if fake.tokens is None else self._answer(200, {"tokens": fake.tokens})
                prompt = body["prompt"]
                choice = {"index": 0, "text": fake.echo_text if fake.echo_text is not None else fake.tokenizer.decode(prompt)}
                if fake.token_ids:
                    choice["token_ids"] = [prompt[-1]] * body["max_tokens"]
                if body.get("prompt_logprobs") is not None:
                    choice["prompt_logprobs"] = [None] + [{str(t): {"logprob": -0.25}} for t in prompt[1:]]
                self._answer(200, {"choices": [choice]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def completions(self):
        return [b for path, b, _ in self.seen if path == "/v1/completions"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(tokenizer):
    servers = []

    def start(**kw):
        servers.append(FakeServer(tokenizer, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def engine(url, tokenizer, local=None, **kw):
    return OpenAIEngine(url, tokenizer, 128, local or (lambda: pytest.fail("computed in-process")), progress=False,
                        backoff=0.01, **kw)


def test_decodes_token_ids_with_a_bounded_pool_and_retries_transient_errors(serve, tokenizer):
    server = serve(fail_first=3)
    e = engine(server.url, tokenizer, concurrency=2)
    prefixes = [[5, 6, 7], [8, 9], [10]]
    assert e.generate_suffixes(prefixes, [2, 3, 1]) == [[7, 7], [9, 9, 9], [10]]
    sent = server.completions()
    assert len(sent) == 3 + 3  # three 503s retried
    assert all(b["temperature"] == 0 and b["ignore_eos"] and b["model"] == "tiny" for b in sent)
    assert e.served_model == "tiny" and e.tokenizer_check == "tokenize"


@pytest.mark.parametrize("suffix", ["/", "/v1", "/v1/"])
def test_the_endpoint_may_be_given_with_or_without_v1(serve, tokenizer, suffix):
    """The OpenAI clients' convention is a base URL ending in /v1; vLLM's /tokenize sits outside it."""
    server = serve()
    e = engine(server.url + suffix, tokenizer)
    assert e.endpoint == server.url and e.tokenizer_check == "tokenize"
    assert e.generate_suffixes([[5, 6]], [2]) == [[6, 6]]


def test_gives_up_after_the_retries_with_a_clear_error(serve, tokenizer):
    server = serve(fail_first=100)
    e = engine(server.url, tokenizer, retries=2)
    with pytest.raises(EngineError, match="HTTP 503"):
        e.generate_suffixes([[5, 6]], [2])
    assert len(server.completions()) == 3


def test_a_server_that_is_not_there(tokenizer):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(EngineError, match="did not answer GET /v1/models after 1 retries"):
        engine(f"http://127.0.0.1:{port}", tokenizer, retries=1)


def test_refuses_a_server_whose_tokenizer_differs(serve, tokenizer):
    with pytest.raises(EngineError, match="tokenizes differently"):
        engine(serve(tokens=[1, 2, 3]).url, tokenizer)


def test_without_tokenize_the_server_must_decode_our_ids_to_our_text(serve, tokenizer):
    assert engine(serve(tokens=None).url, tokenizer).tokenizer_check == "echo"
    with pytest.raises(EngineError, match="tokenizers differ"):
        engine(serve(tokens=None, echo_text="something else").url, tokenizer)


def test_refuses_a_server_that_returns_no_token_ids(serve, tokenizer):
    e = engine(serve(token_ids=False).url, tokenizer)
    with pytest.raises(EngineError, match="no token ids"):
        e.generate_suffixes([[5, 6]], [2])


def test_samples_are_seeded_per_prompt_and_sample(serve, tokenizer):
    server = serve()
    e = engine(server.url, tokenizer)
    rule = DecodingRule(0.7, 5, 0.9)
    out = e.sample_suffixes([[5], [6]], ["a", "b"], [2, 2], 3, rule, seed=0)
    assert out == [[[5, 5]] * 3, [[6, 6]] * 3]
    sent = server.completions()
    assert {(b["temperature"], b["top_k"], b["top_p"]) for b in sent} == {(0.7, 5, 0.9)}
    assert len({b["seed"] for b in sent}) == 6  # one seed per (prompt, sample)
    again = FakeServer(tokenizer)
    try:
        engine(again.url, tokenizer).sample_suffixes([[5], [6]], ["a", "b"], [2, 2], 3, rule, seed=0)
        assert sorted(b["seed"] for b in again.completions()) == sorted(b["seed"] for b in sent)
    finally:
        again.close()


def test_logprobs_from_the_server_under_the_plain_rule_else_in_process(serve, tokenizer):
    class Local:
        def exact_logprobs(self, prefixes, suffixes, rule, desc):
            return ["local"] * len(prefixes)

        def token_logprobs(self, sequences, desc):
            return ["local"] * len(sequences)

    e = engine(serve().url, tokenizer, local=Local)
    assert e.exact_logprobs([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], DecodingRule()) == [-0.5, -0.75]
    assert e.describe()["extraction_probability"] == "server prompt_logprobs"
    assert e.exact_logprobs([[1]], [[5]], DecodingRule(temperature=0.7)) == ["local"]
    assert e.token_logprobs([[1, 2]]) == ["local"]
    assert e.describe()["extraction_probability"] == "in-process"
    assert e.describe()["membership_scores"] == "in-process"


def test_sends_the_api_key(serve, tokenizer, monkeypatch):
    from goldfish.audit.engines.openai import api_key

    monkeypatch.setenv("GOLDFISH_TEST_KEY", "s3cret")
    server = serve()
    engine(server.url, tokenizer, key=api_key("GOLDFISH_TEST_KEY")).generate_suffixes([[5]], [1])
    assert {auth for _, _, auth in server.seen} == {"Bearer s3cret"}
    monkeypatch.delenv("GOLDFISH_TEST_KEY")
    with pytest.raises(ValueError, match="GOLDFISH_TEST_KEY: that environment variable is not set"):
        api_key("GOLDFISH_TEST_KEY")
