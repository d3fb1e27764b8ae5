"""vLLM's OpenAI-compatible server (``vllm serve``) started by goldfish for the audit, from another interpreter (vLLM's own
virtualenv: it pins other transformers/torch versions), and always stopped.

The server runs in its own process group on a loopback port. The port is picked free and the
start retried on another when the server could not bind it (another process took it meanwhile);
vLLM cannot report a port the OS chose for it. It is stopped on every exit path: ``finally`` (errors,
Ctrl-C), SIGTERM/SIGHUP turned into ``SystemExit`` while it runs, and, should the audit die
without running any of these (SIGKILL), the kernel's parent-death signal (``PR_SET_PDEATHSIG``:
SIGTERM to the server, which stops its engine processes).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from goldfish.audit.engines.openai import EngineError

logger = logging.getLogger("goldfish")
PR_SET_PDEATHSIG = 1
PORT_TRIES = 3


def check_vllm_python(path: str) -> None:
    """ValueError unless ``path`` is an interpreter that can import vLLM (checked by running it)."""
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        raise ValueError(f"--vllm-python {path}: no executable there; give the python of a virtualenv with vLLM installed "
                         "(e.g. .engine-venv/bin/python, made by `make engine-venv`)")
    run = subprocess.run([path, "-c", "import vllm, sys; print(vllm.__version__)"], capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise ValueError(f"--vllm-python {path}: it cannot import vllm ({run.stderr.strip().splitlines()[-1:] or '?'}); "
                         "install vLLM into that virtualenv (`make engine-venv`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``; returns when the leader is gone."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group (engine core workers)
        os.killpg(proc.pid, signal.SIGKILL)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _exit_on_signals():
    """SIGTERM and SIGHUP raise SystemExit (so ``finally`` runs) while the block runs."""
    signals = (signal.SIGTERM, signal.SIGHUP)
    try:
        previous = {s: signal.signal(s, _raise_exit) for s in signals}
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def vllm_server(python: str, model: str, dtype: str = "auto", start_timeout_s: float = 900.0):
    """Yield the base URL (http://127.0.0.1:PORT) of ``vllm serve model`` run by ``python``, serving
    it as "goldfish", healthy; stop it when the block ends, however it ends (module docstring). The
    server inherits the environment: vLLM's own settings go there (on CPU, VLLM_CPU_KVCACHE_SPACE:
    GiB of KV cache, else it reserves 92% of the memory and refuses to start when that is not free)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="goldfish-vllm-", suffix=".log", delete=False)
    with _exit_on_signals():
        for attempt in range(PORT_TRIES):
            port = _free_port()
            # the server module `vllm serve` runs (that CLI reads the version of a "vllm" distribution; vllm-cpu's is not)
            cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(Path(model).absolute()), "--host",
                   "127.0.0.1", "--port", str(port), "--dtype", dtype, "--served-model-name", "goldfish"]
            logger.info("starting vLLM (log: %s): %s", log.name, " ".join(cmd))
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            try:
                url = f"http://127.0.0.1:{port}"
                if _wait_healthy(proc, url, start_timeout_s, log.name):
                    logger.info("vLLM is up at %s", url)
                    yield url
                    return
            finally:
                _stop(proc)
            logger.warning("vLLM could not bind port %d (taken meanwhile); retrying on another", port)
        raise EngineError(f"vLLM could not bind a free loopback port in {PORT_TRIES} tries; see its log {log.name}")


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, log_path: str) -> bool:
    """True once GET /health answers 200; False when the server exited because its port was taken;
    EngineError when it exited otherwise or did not come up in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:]
            if "address already in use" in tail.lower():
                return False
            raise EngineError(f"vLLM exited with code {proc.returncode} before it was ready; the end of its log "
                              f"({log_path}):\n{tail}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return True
        time.sleep(0.5)
    raise EngineError(f"vLLM did not answer {url}/health within {timeout_s:.0f} s; see its log {log_path}")
