"""The audit through an OpenAI-compatible completions server (vLLM's ``/v1/completions``).

Prompts go as token ids (the exact tokens goldfish's tokenizer built, chat turns rendered by the
model's template), one completion request per continuation, ``concurrency`` of them in flight (the
server batches them). Greedy decoding is ``temperature 0``; without ``stop_at_eos`` the server is
told to ignore EOS (``ignore_eos``), so each continuation has exactly its length, as in-process.
Generated tokens are read as ids (vLLM's ``return_token_ids``), never re-tokenized from text.

Sampling uses the server's sampler and random numbers (one request per prompt and sample, seeded
from ``sample_seed``, the prompt's key and the sample's index): the same rule (temperature, top-k,
top-p) but not the in-process engine's draws, so sampled figures agree in distribution, not token by
token. The exact extraction probability under the plain rule (temperature 1, no truncation) is the
sum of the suffix's ``prompt_logprobs`` where the server has them; under a truncated or tempered
rule, or without ``prompt_logprobs``, it and the membership scores (Min-K%++ needs the whole
next-token distribution) are computed in-process by the ``local`` engine. ``describe()`` says which.

Transient errors (connection refused or reset, 429, 5xx) are retried with exponential backoff
(urllib3's ``Retry``); any other failure stops the audit with an ``EngineError`` naming the server.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util import Retry

from goldfish.audit.sampling import DecodingRule

PROBE_TEXT = "Goldfish probe: naïve café, 12345 tokens; <tags> & ünïcödé — ok?\n  indented\tend."
TRANSIENT = (429, 500, 502, 503, 504)


class EngineError(RuntimeError):
    """The server failed, or cannot give what the audit needs; the message says what to do."""


def api_key(env_var: str | None) -> str | None:
    """The API key in the environment variable ``env_var`` (None: no key)."""
    if env_var is None:
        return None
    if not os.environ.get(env_var):
        raise ValueError(f"--api-key-env {env_var}: that environment variable is not set (or empty); export the server's API "
                         "key in it, or leave --api-key-env out for a server without one")
    return os.environ[env_var]


def base_url(endpoint: str) -> str:
    """The server's base URL: ``endpoint`` without a trailing slash or ``/v1`` (the OpenAI clients'
    convention ends the base URL in /v1; the routes here add it, and vLLM's /tokenize is outside it)."""
    url = endpoint.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def sample_seed(seed: int, key: str, sample: int) -> int:
    """The server-side seed of continuation ``sample`` of the prompt ``key`` (a 31-bit integer)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{key}\0{sample}".encode("utf-8")).digest()[:4], "big") >> 1


class OpenAIEngine:
    """Completions at ``endpoint`` (the server's base URL, e.g. http://127.0.0.1:8000, with or without
    /v1) for the model it serves as ``served_model`` (None: the only one it lists), whose tokenizer must be ``tokenizer``'s
    (checked on a probe at start). ``local``: a function returning the in-process engine of the same
    model, called only when something must be computed in-process. ``retries``: attempts per request
    beyond the first on transient errors, waiting ``backoff`` * 2^attempt seconds between them.
    ``kind``: the engine's name in ``describe()`` ("vllm" for a server goldfish started)."""

    def __init__(self, endpoint: str, tokenizer, context: int, local: Callable, served_model: str | None = None,
                 key: str | None = None, concurrency: int = 16, progress: bool = True, retries: int = 5,
                 backoff: float = 0.5, timeout: float = 600.0, kind: str = "openai"):
        self.kind, self.endpoint, self.tokenizer, self.context = kind, base_url(endpoint), tokenizer, context
        self._local_factory = local
        self.concurrency, self.progress, self.timeout = concurrency, progress, timeout
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=0, backoff_factor=backoff,
                            status_forcelist=TRANSIENT, allowed_methods=None, raise_on_status=False)
        self._sessions = threading.local()
        self._local = None
        self.served_model = served_model or self._only_model()
        self.tokenizer_check = self._check_tokenizer()
        self.logprobs_source = {}  # stage -> "server prompt_logprobs" | "in-process"

    # ---- HTTP ----
    def _session(self) -> requests.Session:
        if not hasattr(self._sessions, "s"):
            s = requests.Session()
            s.mount("http://", HTTPAdapter(max_retries=self._retry, pool_maxsize=self.concurrency))
            s.mount("https://", HTTPAdapter(max_retries=self._retry, pool_maxsize=self.concurrency))
            self._sessions.s = s
        return self._sessions.s

    def _call(self, method: str, path: str, body: dict | None = None, missing_ok: bool = False) -> dict | None:
        """The JSON answer of ``method path``; None for a 404/405/400 when ``missing_ok`` (the server lacks it)."""
        url = self.endpoint + path
        try:
            r = self._session().request(method, url, json=body, headers=self._headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise EngineError(f"the server at {self.endpoint} did not answer {method} {path} after {self._retry.total} retries "
                              f"({type(e).__name__}: {e}); is it running? (no report was written)") from None
        if missing_ok and r.status_code in (400, 404, 405, 422):
            return None
        if r.status_code != 200:
            raise EngineError(f"the server at {self.endpoint} answered {method} {path} with HTTP {r.status_code}: "
                              f"{r.text[:500]} (no report was written)")
        return r.json()

    def _only_model(self) -> str:
        listed = [m["id"] for m in (self._call("GET", "/v1/models") or {}).get("data", [])]
        if len(listed) != 1:
            raise EngineError(f"the server at {self.endpoint} serves {len(listed)} models ({', '.join(listed) or 'none'}): "
                              "name the one to audit with --served-model NAME")
        return listed[0]

    def _check_tokenizer(self) -> str:
        """How the server's tokenizer was found equal to ours ("tokenize": its /tokenize gave our ids for
        a probe text; "echo": it decoded our ids to our text); EngineError when it differs."""
        ours = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        answer = self._call("POST", "/tokenize", {"model": self.served_model, "prompt": PROBE_TEXT,
                                                  "add_special_tokens": False}, missing_ok=True)
        if answer is not None and "tokens" in answer:
            if answer["tokens"] != ours:
                raise EngineError(f"the server at {self.endpoint} ({self.served_model}) tokenizes differently from --model's "
                                  f"tokenizer: {PROBE_TEXT!r} is {answer['tokens'][:12]}... there and {ours[:12]}... here; "
                                  "serve the same model folder (its tokenizer files) that --model names")
            return "tokenize"
        choice = self._completion({"prompt": ours, "max_tokens": 1, "temperature": 0, "echo": True})
        if not choice["text"].startswith(self.tokenizer.decode(ours)):
            raise EngineError(f"the server at {self.endpoint} ({self.served_model}) decodes the probe's token ids to "
                              f"{choice['text'][:80]!r}, --model's tokenizer to {self.tokenizer.decode(ours)[:80]!r}: their "
                              "tokenizers differ; serve the same model folder that --model names")
        return "echo"

    def _completion(self, body: dict) -> dict:
        answer = self._call("POST", "/v1/completions", {"model": self.served_model, **body})
        return answer["choices"][0]

    def _map(self, fn, items: list, desc: str) -> list:
        """[fn(x) for x in items], ``concurrency`` at a time; the first error stops the rest."""
        out = [None] * len(items)
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(fn, x): k for k, x in enumerate(items)}
            try:
                for f in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not self.progress, unit="req"):
                    out[futures[f]] = f.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return out

    # ---- the engine's operations (goldfish.audit.engines) ----
    def _decode(self, prefix: list[int], length: int, stop_at_eos: bool, **sampling) -> list[int]:
        choice = self._completion({"prompt": prefix, "max_tokens": length, "ignore_eos": not stop_at_eos,
                                   "return_token_ids": True, "skip_special_tokens": False, **sampling})
        ids = choice.get("token_ids")
        if ids is None:
            raise EngineError(f"the server at {self.endpoint} returned no token ids (vLLM's return_token_ids); goldfish "
                              "compares token ids, which re-tokenized text does not give exactly: use a vLLM server")
        ids = list(ids)[:length]
        eos = self.tokenizer.eos_token_id
        return ids[: ids.index(eos)] if stop_at_eos and eos in ids else ids

    def generate_suffixes(self, prefixes, lengths, beams=1, stop_at_eos=False, desc="extract"):
        if beams != 1:
            raise EngineError("--beam above 1 runs in-process only (--engine hf): the servers' beam searches are not HF's")
        return self._map(lambda k: self._decode(prefixes[k], lengths[k], stop_at_eos, temperature=0.0),
                         list(range(len(prefixes))), desc)

    def sample_suffixes(self, prefixes, keys, lengths, samples, rule: DecodingRule, seed, stop_at_eos=False, desc="sample"):
        items = [(i, j) for i in range(len(prefixes)) for j in range(samples)]
        knobs = {"temperature": rule.temperature, "top_p": rule.top_p, "top_k": rule.top_k or -1}
        flat = self._map(lambda ij: self._decode(prefixes[ij[0]], lengths[ij[0]], stop_at_eos,
                                                 seed=sample_seed(seed, keys[ij[0]], ij[1]), **knobs), items, desc)
        return [flat[i * samples : (i + 1) * samples] for i in range(len(prefixes))]

    def _prompt_logprobs(self, sequence: list[int]) -> list[float] | None:
        """log p(x_i | x_<i) for i >= 1 from the server's ``prompt_logprobs``; None when it has none."""
        answer = self._call("POST", "/v1/completions", {"model": self.served_model, "prompt": sequence, "max_tokens": 1,
                                                        "temperature": 0.0, "prompt_logprobs": 0}, missing_ok=True)
        entries = (answer or {}).get("choices", [{}])[0].get("prompt_logprobs")
        if not entries:
            return None
        return [float(entries[i][str(t)]["logprob"]) for i, t in enumerate(sequence) if i >= 1]

    def exact_logprobs(self, prefixes, suffixes, rule: DecodingRule, desc="p_exact"):
        plain = rule == DecodingRule(1.0, None, 1.0)
        if plain and self.logprobs_source.get("extraction_probability") != "in-process":
            sequences = [p + s for p, s in zip(prefixes, suffixes)]
            lps = self._map(self._prompt_logprobs, sequences, desc)
            if all(lp is not None for lp in lps):
                self.logprobs_source["extraction_probability"] = "server prompt_logprobs"
                return [sum(lp[len(p) - 1 :]) for lp, p in zip(lps, prefixes)]
        self.logprobs_source["extraction_probability"] = "in-process"
        return self.local().exact_logprobs(prefixes, suffixes, rule, desc)

    def token_logprobs(self, sequences, desc="score"):
        self.logprobs_source["membership_scores"] = "in-process"  # Min-K%++ reads the whole next-token distribution
        return self.local().token_logprobs(sequences, desc)

    def local(self):
        """The in-process engine, loaded on first use."""
        if self._local is None:
            self._local = self._local_factory()
        return self._local

    def describe(self) -> dict:
        return {"engine": self.kind, "endpoint": self.endpoint, "served_model": self.served_model,
                "tokenizer_check": self.tokenizer_check, "greedy": "server", "sampled": "server (its sampler, seeded per prompt "
                "and sample)", **self.logprobs_source}
