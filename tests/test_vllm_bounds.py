"""The vLLM client bounds what it accepts: a body of gigabytes, or one that never ends, is an error row
for that request, within the request timeout, never a job that swells until it is killed or hangs."""

from __future__ import annotations

import time

from leaf_steps.teachers.vllm import MAX_RESPONSE_BYTES
from test_vllm_client import fake, images, vllm_teacher  # noqa: F401 - `images` is a fixture


def test_a_huge_answer_is_refused_while_it_streams(images):  # noqa: F811
    with fake(huge_body_bytes=2 << 30) as server, vllm_teacher(server, max_retries=2) as teacher:
        t0 = time.monotonic()
        rows = teacher.score_points(images[:2])
        elapsed = time.monotonic() - t0
        requests = server.stats()["chat_requests"]
    assert all(f"passed {MAX_RESPONSE_BYTES:,} bytes and was refused" in r.error for r in rows), rows
    assert requests == 2  # not retried: the server would send it again
    assert elapsed < 10  # 2 GiB were never read


def test_an_endless_answer_ends_at_the_request_timeout(images):  # noqa: F811
    with fake(endless_body=True) as server, vllm_teacher(server, request_timeout_s=1.0, max_retries=1) as teacher:
        t0 = time.monotonic()
        rows = teacher.score_points(images[:2])
        elapsed = time.monotonic() - t0
    assert all("no answer within request_timeout_s=1s" in r.error for r in rows), rows
    assert elapsed < 6  # two attempts of 1 s each (concurrently for the two items), plus backoff
