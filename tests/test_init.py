"""``qckit init`` and the memory estimate behind its choices."""

from __future__ import annotations

import gzip
import json

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.errors import InputError
from qckit.hardware import Environment
from qckit.memory import KNOWN_SHAPES, ModelShape, shape_of, training_memory
from qckit.recipe_init import inspect_input, plan_training

GIB = 1024**3


def run(argv, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    console = Console(width=120, record=True, force_terminal=False)
    return main(argv, console=console), console.export_text()


def test_the_shape_counts_the_parameters_transformers_builds(tiny_model, tiny_model_dir):
    shape = ModelShape.from_config(tiny_model.config.to_dict())
    assert shape.params == sum(p.numel() for p in tiny_model.parameters())
    assert shape_of(str(tiny_model_dir)) == shape
    assert abs(KNOWN_SHAPES["meta-llama/Llama-3.2-1B"].params - 1_235_814_400) < 1e6  # the published count
    assert abs(KNOWN_SHAPES["meta-llama/Llama-3.1-8B"].params - 8_030_261_248) < 1e6


def test_the_lora_parameters_are_the_ones_peft_trains(tiny_model):
    from peft import LoraConfig, get_peft_model

    from qckit_builtins.adapters.lora import SEED_LORA_TARGETS

    shape = ModelShape.from_config(tiny_model.config.to_dict())
    peft_model = get_peft_model(tiny_model, LoraConfig(r=8, target_modules=list(SEED_LORA_TARGETS)))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape.lora_params(8) == trainable


def test_the_estimate_moves_the_way_memory_does():
    shape = KNOWN_SHAPES["meta-llama/Llama-3.2-1B"]
    lora = training_memory(shape, method="lora", batch_size=8)
    assert 12 < lora.total_gib < 24  # logits of a 128k vocabulary dominate at 8 x 1024 tokens
    assert (
        training_memory(shape, method="4bit", batch_size=8).weights < lora.weights / 2
    )  # embeddings stay 16-bit
    assert training_memory(shape, method="full", batch_size=8).total > lora.total
    without = training_memory(shape, method="lora", batch_size=8, gradient_checkpointing=False)
    assert without.activations > 5 * lora.activations
    assert training_memory(shape, batch_size=4).total < lora.total
    with pytest.raises(ValueError, match="method"):
        training_memory(shape, method="lora8")


def test_init_reads_formats_sizes_and_the_jsonl_text_field(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("Y fait frette.\n\nChu brûlé raide.\n", encoding="utf-8")
    found = inspect_input(txt)
    assert (found.format, found.compressed, found.documents_estimate, found.text_field) == (
        "txt",
        False,
        2,
        None,
    )
    rows = [{"id": i, "title": "t", "body": "Mon char est scrap, " * 3} for i in range(5)]
    gz = tmp_path / "forum.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n")
    found = inspect_input(gz)
    assert (found.format, found.compressed, found.text_field) == ("jsonl", True, "body")
    assert found.fields_seen == ["body", "id", "title"]
    both = tmp_path / "b.jsonl"
    both.write_text(json.dumps({"text": "x", "body": "a much longer text"}) + "\n", encoding="utf-8")
    assert inspect_input(both).text_field == "text"  # the reader's default field wins when present
    for name, content, what in [
        ("c.csv", "a,b\n", "not a .txt or .jsonl"),
        ("e.ndjson", "{}\n", "not a .txt or .jsonl"),
        ("notes", "Y fait frette.\n", "not a .txt or .jsonl"),
        ("d.jsonl", "[1, 2]\n", "no JSON object with a string field"),
    ]:
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match=what):
            inspect_input(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        inspect_input(tmp_path / "missing.txt")


def test_the_plan_fits_the_gpu_it_sees():
    cpu = plan_training(Environment())
    assert cpu.precision == "fp32" and cpu.window == 256 and "no CUDA GPU" in cpu.reasons[0]
    big = plan_training(Environment(device="cuda", gpu_count=1, gpu_memory=(80 * GIB,), bf16_supported=True))
    assert (big.model, big.adapter, big.batch_size, big.gradient_checkpointing) == (
        "meta-llama/Llama-3.2-1B",
        "lora",
        8,
        False,
    )
    assert big.batch_size * big.gradient_accumulation_steps == 64  # the seed's global batch
    t4 = plan_training(Environment(device="cuda", gpu_count=1, gpu_memory=(15 * GIB,), fp16_supported=True))
    assert t4.precision == "fp16" and t4.batch_size < 8
    assert (
        training_memory(
            KNOWN_SHAPES["meta-llama/Llama-3.2-1B"],
            method=t4.adapter,
            precision="fp16",
            batch_size=t4.batch_size,
            gradient_checkpointing=t4.gradient_checkpointing,
        ).total
        <= 0.9 * 15 * GIB
    )
    two = plan_training(
        Environment(device="cuda", gpu_count=2, gpu_memory=(80 * GIB, 80 * GIB), bf16_supported=True)
    )
    assert two.batch_size * two.gradient_accumulation_steps * 2 == 64
    tiny = plan_training(Environment(device="cuda", gpu_count=1, gpu_memory=(4 * GIB,), bf16_supported=True))
    assert tiny.adapter == "4bit"


def test_qckit_init_writes_a_recipe_that_checks(tmp_path, monkeypatch, tiny_model_dir):
    (tmp_path / "forum.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "message": f"Y fait frette à matin numéro {i}."}) for i in range(30))
        + "\n",
        encoding="utf-8",
    )
    status, text = run(
        ["init", "forum.jsonl", "--model", "HuggingFaceTB/SmolLM2-135M"], tmp_path, monkeypatch
    )
    assert status == 0, text
    assert "wrote forum.toml" in text and "qckit run forum.toml --check" in text
    recipe = (tmp_path / "forum.toml").read_text(encoding="utf-8")
    assert 'field = "message"' in recipe and 'output = "runs/forum/data"' in recipe
    status, again = run(["init", "forum.jsonl"], tmp_path, monkeypatch)
    assert status == InputError.exit_code and "already exists" in again
    # --check asks the Hub about a hub id (no network in tests): the same recipe on a local model
    model = f"train.model={tiny_model_dir}"
    status, checked = run(["run", "forum.toml", "--check", "--set", model], tmp_path, monkeypatch)
    assert status == 0, checked
