"""Which ``vllm serve`` arguments of a launched teacher can change its answers (part of the store key).

Kept apart from :mod:`leaf_steps.teachers.vllm` so that every scoring step can split a teacher block
(:func:`leaf_steps.teachers.base.split_spec`) without importing (and code-hashing) the vLLM client.
"""

from __future__ import annotations

from collections.abc import Sequence

# `vllm serve` flags that change how requests are run (memory, batching, parallelism, caching of
# computation, logging, downloads), never what the model answers beyond numerical noise (engine
# arguments, docs.vllm.ai/en/latest/serving/engine_args.html). Every other flag in launch.args
# (--dtype, --quantization, --revision, --kv-cache-dtype, --tokenizer, --chat-template, --seed,
# --hf-overrides, --mm-processor-kwargs, an unknown new flag...) is part of the score store key.
OPERATIONAL_SERVE_FLAGS = frozenset(
    {
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--swap-space",
        "--cpu-offload-gb",
        "--enforce-eager",
        "--no-enforce-eager",
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
        "--block-size",
        "--num-gpu-blocks-override",
        "--max-seq-len-to-capture",
        "--disable-custom-all-reduce",
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--data-parallel-size",
        "-dp",
        "--distributed-executor-backend",
        "--max-parallel-loading-workers",
        "--download-dir",
        "--load-format",
        "--disable-log-stats",
        "--disable-log-requests",
        "--enable-log-requests",
        "--uvicorn-log-level",
        "--max-log-len",
        "--served-model-name",
        "--host",
        "--root-path",
        "--ssl-keyfile",
        "--ssl-certfile",
        "--allowed-local-media-path",
        "--disable-frontend-multiprocessing",
        "--api-server-count",
        "--trust-remote-code",
        "--max-model-len",
        "--use-tqdm-on-load",
        "--no-use-tqdm-on-load",
    }
)


def answer_serve_args(args: Sequence[str]) -> list[str]:
    """``launch.args`` less the flags (and their values) in :data:`OPERATIONAL_SERVE_FLAGS`, in order."""
    kept: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag = arg.split("=", 1)[0]
        if flag in OPERATIONAL_SERVE_FLAGS:
            takes_value = "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("-")
            i += 2 if takes_value else 1
            continue
        kept.append(arg)
        i += 1
    return kept
