"""Launch ``vllm serve`` for the teacher, wait until it is healthy, and always stop it.

The server runs in its own process group (tensor-parallel workers included), logs to
a file, and is polled on ``GET /health`` until it answers 200. On leaving the context
(normal exit, exception, KeyboardInterrupt, or SIGTERM delivered to this process) the
whole group gets SIGTERM, then SIGKILL after a grace period. A server that exits or
stays unhealthy during start-up raises :class:`~leaf_steps.core.errors.TeacherError` with
the tail of its log.

The ``vllm`` executable is looked up on PATH (the tests put a stand-in first).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from leaf_steps.core.errors import TeacherError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
_live_servers: weakref.WeakSet[VllmServer] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class VllmServer:
    """``vllm serve MODEL`` as a managed subprocess; use as a context manager."""

    def __init__(
        self,
        model: str,
        *,
        executable: str = "vllm",
        host: str = "127.0.0.1",
        port: int | None = None,
        max_logprobs: int = 20,
        images_per_prompt: int = 2,
        tensor_parallel_size: int = 1,
        gpus: Sequence[int] | None = None,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 1800.0,
        log_file: str | Path | None = None,
        api_key: str | None = None,
        poll_interval_s: float = 0.5,
        stop_grace_s: float = 30.0,
    ):
        self.model = model
        self.executable = executable
        self.host = host
        self.port = port
        self.max_logprobs = max_logprobs
        self.images_per_prompt = images_per_prompt
        self.tensor_parallel_size = tensor_parallel_size
        self.gpus = list(gpus) if gpus is not None else None
        self.max_model_len = max_model_len
        self.trust_remote_code = trust_remote_code
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self.log_file = Path(log_file) if log_file else None
        self._api_key = api_key  # handed over in the environment, never on the command line
        self.poll_interval_s = poll_interval_s
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._previous_sigterm: Any = None

    # -- what runs
    def command(self) -> list[str]:
        cmd = [
            self.executable,
            "serve",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-logprobs",
            str(self.max_logprobs),
            # JSON form: recent vLLM rejects the old "image=2" syntax.
            "--limit-mm-per-prompt",
            json.dumps({"image": self.images_per_prompt}),
        ]
        if self.tensor_parallel_size > 1:
            cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.trust_remote_code:
            cmd += ["--trust-remote-code"]
        return cmd + self.extra_args

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- lifecycle
    def start(self) -> VllmServer:
        if self.process is not None:
            return self
        exe = shutil.which(self.executable)
        if exe is None:
            raise TeacherError(
                f"`{self.executable}` not found on PATH: install vLLM on this GPU host "
                "(pip install 'leaf-iqa[vllm]') or point teachers.<name>.base_url at a running server"
            )
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_file is None:
            fd, name = tempfile.mkstemp(prefix=f"leaf-vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_file = Path(name)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("VLLM_API_KEY", None)
        if self._api_key:
            env["VLLM_API_KEY"] = self._api_key  # vLLM reads it when --api-key is absent
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.gpus)
        cmd = [exe, *self.command()[1:]]
        log.info("starting vLLM: %s (log: %s)", " ".join(cmd), self.log_file)
        self._log_handle = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            cmd,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        _live_servers.add(self)
        self._install_sigterm_handler()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.root_url}/health"
        with httpx.Client(timeout=5.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise TeacherError(
                        f"vLLM server exited with code {code} during start-up "
                        f"(log: {self.log_file}):\n{log_tail(self.log_file)}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        log.info("vLLM server healthy at %s (pid %s)", self.base_url, self.process.pid)
                        return
                except httpx.TransportError:
                    pass  # not listening yet: weights are still loading
                if time.monotonic() >= deadline:
                    raise TeacherError(
                        f"vLLM server not healthy within startup_timeout_s={self.startup_timeout_s:g}s "
                        f"({url}; log: {self.log_file}):\n{log_tail(self.log_file)}"
                    )
                time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``stop_grace_s``; safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            self._signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("vLLM server (pid %s) ignored SIGTERM for %ss: killing", pgid, self.stop_grace_s)
            # Workers may outlive the leader: the group is killed in any case.
            self._signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
            _live_servers.discard(self)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self._restore_sigterm_handler()

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # A SIGTERM (Snakemake cancelling the job, Slurm time limit) must not leave the
    # GPU server running: turn it into SystemExit so context managers unwind.
    def _install_sigterm_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; atexit still covers exit
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            self.stop()
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        self._previous_sigterm = previous
        signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm_handler(self) -> None:
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        server.stop()
