"""Launched mode: the teacher runs `vllm serve` itself and always stops it.

tests/bin/vllm stands in for the real executable (it starts tests/fake_vllm_server.py
with the arguments it was given), so these tests exercise the real subprocess,
process-group, health-polling and signal handling code.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from leaf_steps.core.errors import TeacherError
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.vllm_server import VllmServer

REPO = Path(__file__).resolve().parents[1]
PROMPTS = {"point": "Rate it: Excellent, Good, Fair, Poor, or Bad.", "pair": "A or B?"}
MODEL = "OpenGVLab/InternVL3_5-8B"


@pytest.fixture(autouse=True)
def fake_vllm_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{REPO / 'tests' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LEAF_TEST_PYTHON", sys.executable)
    for name in [k for k in os.environ if k.startswith("FAKE_VLLM_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[ImageRef]:
    root = tmp_path_factory.mktemp("photos")
    refs = []
    for name, gain in (("dim", 0.3), ("bright", 1.2)):
        arr = np.clip(np.asarray(skdata.coffee(), dtype=np.float64)[::4, ::4] * gain, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{name}.jpg", quality=92)
        refs.append(ImageRef(name, str(root / f"{name}.jpg")))
    return refs


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def launched_spec(**launch) -> dict:
    return {
        "backend": "vllm",
        "name": "big",
        "model": MODEL,
        "base_url": None,
        "backoff_s": 0.01,
        "launch": {"startup_timeout_s": 30, **launch},
    }


def stats(server: VllmServer) -> dict:
    return httpx.get(f"{server.root_url}/fake/stats").json()


def test_launch_scores_and_shuts_down(photos, tmp_path):
    log_file = tmp_path / "vllm.log"
    spec = launched_spec(
        gpu_ids=[2, 3],
        max_model_len=8192,
        trust_remote_code=True,
        args=["--gpu-memory-utilization", "0.9"],
        log_file=str(log_file),
    )
    with make_teacher({**spec, "top_logprobs": 10, "gpus": 2}, PROMPTS) as teacher:  # gpus=2: tensor parallel 2
        points = teacher.score_points(photos)
        pairs = teacher.score_pairs([(photos[1], photos[0])])
        server = teacher.server
        pid, info = server.pid, stats(server)
        assert alive(pid)
    assert teacher.server is None and wait_gone(pid)
    assert all(r.error is None for r in points + pairs)
    assert np.argmax(points[1].logliks) < np.argmax(points[0].logliks)  # bright photo: a better level
    assert pairs[0].logliks[0] > pairs[0].logliks[1]  # two images per prompt were accepted
    argv = info["argv"]
    assert argv[:2] == ["serve", MODEL]
    assert argv[argv.index("--max-logprobs") + 1] == "10"
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 2}
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert "--trust-remote-code" in argv and argv[-2:] == ["--gpu-memory-utilization", "0.9"]
    assert info["cuda_visible_devices"] == "2,3"
    assert f"fake vllm (pid {pid}) listening" in log_file.read_text()
    assert teacher.describe()["operational"]["launch"]["tensor_parallel_size"] == 2


def test_whole_process_group_is_stopped_on_failure(photos, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_SPAWN_WORKER", "1")
    with pytest.raises(RuntimeError, match="boom"):
        with make_teacher(launched_spec(), PROMPTS) as teacher:
            teacher.score_points(photos[:1])
            server_pid, worker_pid = teacher.server.pid, stats(teacher.server)["worker_pid"]
            assert alive(server_pid) and alive(worker_pid)
            raise RuntimeError("boom")
    assert wait_gone(server_pid) and wait_gone(worker_pid)  # the "tensor-parallel worker" too


def test_keyboard_interrupt_stops_the_server(monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_STARTUP_DELAY_S", "1")  # "loading weights": connections refused meanwhile
    with pytest.raises(KeyboardInterrupt):
        with VllmServer(MODEL, startup_timeout_s=30) as server:
            pid = server.pid
            assert httpx.get(f"{server.root_url}/health").status_code == 200
            raise KeyboardInterrupt
    assert wait_gone(pid)


def test_sigterm_ignoring_server_is_killed(monkeypatch, caplog):
    monkeypatch.setenv("FAKE_VLLM_IGNORE_SIGTERM", "1")
    server = VllmServer(MODEL, startup_timeout_s=30, stop_grace_s=0.5).start()
    pid, process = server.pid, server.process
    with caplog.at_level("WARNING"):
        server.stop()
    assert not alive(pid)
    assert process.returncode == -signal.SIGKILL  # it did not exit on SIGTERM: the grace ran out
    assert f"(pid {pid}) ignored SIGTERM" in caplog.text


def test_sigterm_to_the_driver_stops_the_server(photos, tmp_path):
    """Snakemake/Slurm cancel a job with SIGTERM: the GPU server must not outlive the driver."""
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from leaf_steps.teachers.base import ImageRef, make_teacher
        teacher = make_teacher({launched_spec()!r}, {PROMPTS!r})
        rows = teacher.score_points([ImageRef("a", {photos[0].path!r})])
        print(teacher.server.pid, rows[0].error, flush=True)
        time.sleep(60)
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid_text, error = driver.stdout.readline().split()
        server_pid = int(pid_text)
        assert error == "None" and alive(server_pid)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        driver.kill()
    assert wait_gone(server_pid)


def test_never_healthy_is_a_clear_error_within_the_timeout(photos, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_VLLM_NEVER_HEALTHY", "1")
    teacher = make_teacher(launched_spec(startup_timeout_s=2, log_file=str(tmp_path / "v.log")), PROMPTS)
    with pytest.raises(TeacherError) as err:
        teacher.score_points(photos[:1])
    message = str(err.value)
    assert "not healthy within startup_timeout_s=2s" in message and "v.log" in message
    assert "listening on" in message  # the log tail is part of the error
    assert teacher.server is None
    assert wait_gone(int(re.search(r"fake vllm \(pid (\d+)\)", message).group(1)))


def test_crash_at_start_is_reported_at_once_with_the_log(photos, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_EXIT_AT_START", "3")
    # The crash is noticed while polling for health (that error names the exit code), not after the
    # 60 s start-up timeout (that one says "not healthy within").
    teacher = make_teacher(launched_spec(startup_timeout_s=60), PROMPTS)
    with pytest.raises(TeacherError, match=r"exited with code 3 during start-up(.|\n)*CUDA out of memory"):
        teacher.score_points(photos[:1])
    assert teacher.server is None


def test_missing_executable_is_a_clear_error(photos):
    teacher = make_teacher(launched_spec(executable="vllm-not-installed"), PROMPTS)
    with pytest.raises(TeacherError, match="`vllm-not-installed` not found on PATH"):
        teacher.score_points(photos[:1])


def test_api_key_goes_to_the_server_environment_only(photos, monkeypatch, tmp_path):
    key = "sk-launch-" + os.urandom(6).hex()
    monkeypatch.setenv("LEAF_TEST_LAUNCH_KEY", key)
    monkeypatch.setenv("VLLM_API_KEY", "stale-key-from-the-shell")  # must not leak into the server
    log_file = tmp_path / "server.log"
    spec = {**launched_spec(log_file=str(log_file)), "api_key_env": "LEAF_TEST_LAUNCH_KEY"}
    with make_teacher(spec, PROMPTS) as teacher:
        rows = teacher.score_points(photos[:1])
        info = stats(teacher.server)
        unauthorised = httpx.get(f"{teacher.base_url}/models").status_code
    assert rows[0].error is None and unauthorised == 401
    assert info["api_key_required"] and info["auth_headers"] == [f"Bearer {key}"]
    assert key not in " ".join(info["argv"]) and key not in log_file.read_text()
    assert key not in json.dumps(teacher.describe())
