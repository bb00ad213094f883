"""Tiny random-weight VLM checkpoints: built offline, loadable through from_pretrained, reproducible."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from leaf_steps.core.errors import ConfigError
from leaf_steps.teachers import tiny_models
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS

EXPECTED_CLASS = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("arch", tiny_models.ARCHES)
def test_build_loads_through_from_pretrained_and_runs(arch, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = tiny_models.build_tiny_model(arch, tmp_path / arch, seed=0)
    files = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", tiny_models.MARKER_FILE)
    for name in files:
        assert (folder / name).is_file(), name
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == EXPECTED_CLASS[arch]
    text_config = model.config.get_text_config()
    assert text_config.hidden_size == 64 and text_config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    tokenizer = processor.tokenizer
    for special in tiny_models.RECIPES[arch]["specials"]:
        assert tokenizer.tokenize(special) == [special]
    for label in (*LEVELS, *PAIR_LABELS):  # the answer words are whole tokens, as in the real vocabularies
        assert len(tokenizer.encode(label, add_special_tokens=False)) == 1, label
        assert len(tokenizer.encode(" " + label, add_special_tokens=False)) == 1, label

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("assistant\n")
    inputs = processor(text=[text], images=[[image]], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert 0 < n_image_tokens <= 40  # small min/max pixels or tiles: a 160 px image is a handful of tokens
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    assert logits.shape[-1] == text_config.vocab_size and torch.isfinite(logits).all()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    rng_before = torch.get_rng_state()
    a = tiny_models.build_tiny_model("qwen2_vl", tmp_path / "a", seed=0)
    b = tiny_models.build_tiny_model("qwen2_vl", tmp_path / "b", seed=0)
    c = tiny_models.build_tiny_model("qwen2_vl", tmp_path / "c", seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's torch RNG is left alone
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_ensure_tiny_model_builds_once_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAF_CACHE", str(tmp_path / "cache"))
    path = tiny_models.ensure_tiny_model("qwen2_vl", seed=0)
    assert path.parent == tmp_path / "cache" / "tiny"
    assert path.name.startswith("qwen2_vl-seed0-")
    assert os.listdir(path.parent) == [path.name]  # the temp build folder was renamed, nothing left over

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cached model was rebuilt")

    monkeypatch.setattr(tiny_models, "build_tiny_model", no_rebuild)
    assert tiny_models.ensure_tiny_model("qwen2_vl", seed=0) == path
    with pytest.raises(AssertionError, match="rebuilt"):  # another seed is another checkpoint
        tiny_models.ensure_tiny_model("qwen2_vl", seed=1)
    assert os.listdir(path.parent) == [path.name]  # the failed build cleaned up its temp folder


def test_parse_tiny_name():
    assert tiny_models.parse_tiny_name("tiny:qwen2_vl") == ("qwen2_vl", 0)
    assert tiny_models.parse_tiny_name("tiny:internvl:3") == ("internvl", 3)
    with pytest.raises(ConfigError, match="qwen2_vl"):  # the message lists the known architectures
        tiny_models.parse_tiny_name("tiny:llama")
    with pytest.raises(ConfigError, match="integer"):
        tiny_models.parse_tiny_name("tiny:qwen2_vl:x")


def test_cli_writes_checkpoint(tmp_path, capsys):
    tiny_models.main(["--arch", "internvl", "--out", str(tmp_path / "m"), "--seed", "2"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
