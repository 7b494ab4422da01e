"""A run's delta carried onto another model (qckit.delta, ``qckit export RUN_DIR --onto MODEL``), and
``qckit export`` taking the run folder and inferring the format from the output path."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from qckit.delta import carry_delta
from qckit.errors import InputError, QckitError
from qckit.export import EXPORT_RECORD, GGUF_RECORD_KEY, RunModel, read_run
from qckit.testing import (
    SAMPLE_SENTENCES,
    make_tiny_llama,
    save_tiny_model,
    tiny_train_settings,
    train_tiny_tokenizer,
    write_corpus,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: absolute tolerance on a weight: float32 sums of a few tiny products (|W| ≲ 0.1, |delta| ≲ 0.1)
ATOL = 1e-6
NEW_WORDS = ["magasiner", "tuque", "pantoute"]


def _train(root: Path, base: Path, name: str, adapters: list, **overrides) -> Path:
    from qckit.train import TrainRun
    from qckit_builtins.chunkers import WindowChunker

    corpus = [
        write_corpus(
            root / "train.txt", [*SAMPLE_SENTENCES, *(f"Mets ta {w} pis va {w}" for w in NEW_WORDS)] * 2
        ),
        write_corpus(root / "val.txt", SAMPLE_SENTENCES[:6]),
    ]
    settings = tiny_train_settings(corpus, root / name, base, max_steps=2, timing_warmup_steps=0, **overrides)
    TrainRun(settings, WindowChunker(max_length=32, stride=0, min_length=8), adapters).run()
    return root / name


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The base, its "instruct" sibling (same shapes and tokenizer, other weights) and mismatched models."""
    from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("onto_models")
    found = {"base": tiny_model_dir, "sibling": save_tiny_model(root / "sibling", seed=1)}
    found["hidden"] = save_tiny_model(root / "hidden", hidden_size=32)
    found["vocab"] = save_tiny_model(root / "vocab", vocab_size=400)
    arch = root / "gpt2"  # a config and a tokenizer, no weights: refused before any weight is read
    GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=64, n_layer=2, n_head=4).save_pretrained(arch)
    tiny_tokenizer.save_pretrained(arch)
    found["arch"] = arch
    # every compared config key agrees, but the attention heads are narrower: q/k/v/o have other shapes
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.head_dim = 8
    shape = root / "shape"
    LlamaForCausalLM(config).save_pretrained(shape)
    tiny_tokenizer.save_pretrained(shape)
    found["shape"] = shape
    # the same vocabulary plus a chat token: the embeddings have one more row
    tokenizer = train_tiny_tokenizer(SAMPLE_SENTENCES)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    extra = root / "extra"
    make_tiny_llama(tokenizer).save_pretrained(extra)
    tokenizer.save_pretrained(extra)
    found["extra"] = extra
    return found


@pytest.fixture(scope="module")
def lora_run(models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run on the base that also trains the embeddings and the head in full (modules_to_save)."""
    from qckit_builtins.adapters import LoraAdapter

    adapter = LoraAdapter(r=4, alpha=8, train_embeddings=True)
    return _train(tmp_path_factory.mktemp("onto_lora"), models["base"], "run", [adapter])


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _lora_delta(run_dir: Path, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The run's delta read from the adapter file alone: B·A·alpha/r per adapted matrix, trained − base for
    the matrices saved in full (independent of peft's merge)."""
    config = json.loads((run_dir / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    delta = {name: torch.zeros_like(value) for name, value in base.items()}
    with safe_open(str(run_dir / "adapter_model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
        for key in keys:
            name = key.removeprefix("base_model.model.")
            if ".lora_A." in key:
                b = handle.get_tensor(key.replace(".lora_A.", ".lora_B."))
                delta[name.replace(".lora_A.", ".")] = b @ handle.get_tensor(key) * scale
            elif ".lora_" not in key:
                delta[name] = handle.get_tensor(key) - base[name]
    assert any(".lora_A." in key for key in keys) and "model.embed_tokens.weight" in {
        k.removeprefix("base_model.model.") for k in keys
    }
    return delta


def test_lora_delta_onto_the_sibling_is_the_sibling_plus_scaled_delta(
    models, lora_run, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    out = carry_delta(read_run(lora_run), tmp_path / "out", onto=str(models["sibling"]), strength=0.5)
    written, sibling = _weights(out), _weights(models["sibling"])
    delta = _lora_delta(lora_run, _weights(models["base"]))
    assert written.keys() == sibling.keys()
    for name, value in written.items():
        expected = sibling[name] + 0.5 * delta[name]
        assert float((value - expected).abs().max()) <= ATOL, name
    assert any(float(d.abs().max()) > 1e-3 for d in delta.values())  # the run changed something
    record = json.loads((out / EXPORT_RECORD).read_text())
    assert record["onto"] == str(models["sibling"]) and record["strength"] == 0.5
    assert record["training"] == "lora" and record["run"] == str(lora_run.resolve())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(models["sibling"]).get_vocab()


def test_a_tied_runs_delta_onto_a_tied_sibling_moves_its_one_matrix(
    tiny_tied_model_dir: Path, tmp_path: Path
) -> None:
    """The tied embeddings trained in place (stored once in the adapter) carry over as one matrix."""
    from transformers import AutoModelForCausalLM

    from qckit_builtins.adapters import LoraAdapter

    sibling = save_tiny_model(tmp_path / "sibling", seed=1, tied=True)
    run_dir = _train(tmp_path, tiny_tied_model_dir, "run", [LoraAdapter(r=4, alpha=8, train_embeddings=True)])
    out = carry_delta(read_run(run_dir), tmp_path / "out", onto=str(sibling), strength=0.5)
    written, target = _weights(out), _weights(sibling)
    delta = _lora_delta(run_dir, _weights(tiny_tied_model_dir))
    assert written.keys() == target.keys() and "lm_head.weight" not in written  # tied: one matrix
    for name, value in written.items():
        assert float((value - (target[name] + 0.5 * delta[name])).abs().max()) <= ATOL, name
    assert float(delta["model.embed_tokens.weight"].abs().max()) > 1e-3  # the embeddings moved
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_strength_zero_writes_the_sibling_exactly(models, lora_run, tmp_path: Path) -> None:
    out = carry_delta(read_run(lora_run), tmp_path / "out", onto=str(models["sibling"]), strength=0)
    written, sibling = _weights(out), _weights(models["sibling"])
    assert written.keys() == sibling.keys()
    assert all(torch.equal(written[name], sibling[name]) for name in sibling)


def test_strength_on_the_runs_own_base_interpolates(models, lora_run, tmp_path: Path) -> None:
    from qckit.export import export_model

    run = read_run(lora_run)
    base, merged = (
        _weights(models["base"]),
        _weights(export_model(run.base, tmp_path / "merged", adapter_dir=lora_run)),
    )
    half = _weights(carry_delta(run, tmp_path / "half", strength=0.5))
    for name, value in half.items():
        assert float((value - (base[name] + merged[name]) / 2).abs().max()) <= ATOL, name
    zero = _weights(carry_delta(run, tmp_path / "zero", strength=0))
    assert all(torch.equal(zero[name], base[name]) for name in base)
    bf16 = _weights(carry_delta(run, tmp_path / "bf16", strength=0.5, outtype="bf16"))
    assert all(value.dtype == torch.bfloat16 for value in bf16.values())


def test_a_full_fine_tune_carries_trained_minus_base(models, tmp_path: Path) -> None:
    run_dir = _train(tmp_path, models["base"], "full", [])
    run = read_run(run_dir)
    assert run.adapter_dir is None and run.model == str(run_dir)
    out = carry_delta(run, tmp_path / "out", onto=str(models["sibling"]), strength=2.0)
    written, sibling = _weights(out), _weights(models["sibling"])
    trained, base = _weights(run_dir), _weights(models["base"])
    for name, value in written.items():
        expected = sibling[name] + 2.0 * (trained[name] - base[name])
        assert float((value - expected).abs().max()) <= 4 * ATOL, name
    assert json.loads((out / EXPORT_RECORD).read_text())["training"] == "full"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("hidden", r"not the run's architecture: hidden_size is 32, the run's model has 64"),
        ("arch", r"not the run's architecture: model_type is 'gpt2', the run's model has 'llama'"),
        (
            "vocab",
            r"not the run's vocabulary: the run's token '.*' \(id \d+\) (is not in it|has id \d+ in it)",
        ),
        (
            "shape",
            r"tensor 'model.layers.0.self_attn.q_proj.weight' has shape \(32, 64\), the run's \(64, 64\)",
        ),
        ("extra", r"not the run's vocabulary: its token '<\|im_start\|>' \(id \d+\) is not in the run's"),
    ],
)
def test_a_mismatched_target_is_refused_naming_it_before_writing(
    models, lora_run, tmp_path: Path, target: str, message: str
) -> None:
    for output in (tmp_path / "out", tmp_path / "out.gguf"):
        with pytest.raises(InputError, match=message) as err:
            carry_delta(read_run(lora_run), output, onto=str(models[target]))
        assert err.value.path == str(models[target]) and "\n" not in str(err.value)
        assert not output.exists() and list(tmp_path.iterdir()) == []


def test_a_grown_vocabulary_is_refused_onto_a_target_without_its_rows(
    models, tiny_tokenizer, tmp_path: Path
) -> None:
    from qckit.export import export_model
    from qckit_builtins.adapters import LoraAdapter

    run_dir = _train(
        tmp_path,
        models["base"],
        "grown",
        [LoraAdapter(r=4, alpha=8, train_embeddings=True)],
        add_tokens=NEW_WORDS,
    )
    run = read_run(run_dir)
    with pytest.raises(
        InputError, match=r"lacks the rows of the run's grown vocabulary .*token '.+' \(id (\d+)\)"
    ) as err:
        carry_delta(run, tmp_path / "out", onto=str(models["sibling"]))
    first_new = f"(id {len(tiny_tokenizer)}) is not in its vocabulary"
    assert err.value.detail.endswith(first_new)
    assert not (tmp_path / "out").exists()
    # a target that has the run's tokens: their rows move from the target's towards the trained ones
    from safetensors.torch import save_file

    target = export_model(run.base, tmp_path / "grown_target", adapter_dir=run_dir)
    other = {name: value * 0.5 for name, value in _weights(target).items()}  # other weights, same vocabulary
    save_file(other, str(target / "model.safetensors"), metadata={"format": "pt"})
    merged = _weights(export_model(run.base, tmp_path / "merged", adapter_dir=run_dir))
    out = _weights(carry_delta(run, tmp_path / "out", onto=str(target), strength=0.25))
    added = len(json.loads((run_dir / "training_summary.json").read_text())["vocabulary"]["tokens"])
    rows = out["model.embed_tokens.weight"].shape[0] - added  # the base's rows
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        expected = 0.75 * other[name][rows:] + 0.25 * merged[name][rows:]
        assert float((out[name][rows:] - expected).abs().max()) <= ATOL
    # on the run's own base, the new rows are the trained rows
    own = _weights(carry_delta(run, tmp_path / "own", strength=0.5))
    assert torch.equal(own["model.embed_tokens.weight"][rows:], merged["model.embed_tokens.weight"][rows:])


def test_gguf_when_the_output_ends_in_gguf(models, lora_run, tmp_path: Path) -> None:
    import gguf
    from transformers import AutoModelForCausalLM

    run = read_run(lora_run)
    path = carry_delta(run, tmp_path / "chat.gguf", onto=str(models["sibling"]), strength=0.5, outtype="f32")
    assert path.is_file()
    reader = gguf.GGUFReader(str(path))
    field = reader.fields[GGUF_RECORD_KEY]
    record = json.loads(bytes(field.parts[field.data[0]]).decode("utf-8"))
    assert record["onto"] == str(models["sibling"]) and record["strength"] == 0.5
    from_gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    folder = AutoModelForCausalLM.from_pretrained(
        carry_delta(run, tmp_path / "chat", onto=str(models["sibling"]), strength=0.5)
    ).eval()
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        assert float((from_gguf(input_ids=ids).logits - folder(input_ids=ids).logits).abs().max()) <= 1e-3


def test_strength_and_run_folder_refusals(models, lora_run, tmp_path: Path) -> None:
    run = read_run(lora_run)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(QckitError, match="--strength must be a finite number ≥ 0"):
            carry_delta(run, tmp_path / "out", strength=bad)
    with pytest.raises(InputError, match="not a run folder"):
        read_run(models["base"])
    with pytest.raises(InputError, match="run folder not found"):
        read_run(tmp_path / "missing")
    with pytest.raises(InputError, match="is an input of the export"):
        carry_delta(run, lora_run, onto=str(models["sibling"]))
    with pytest.raises(InputError, match="ends in .gguf but the format is safetensors"):
        carry_delta(run, tmp_path / "x.gguf", format="safetensors")
    moved = RunModel(lora_run, str(tmp_path / "nowhere"), lora_run)
    with pytest.raises(InputError, match="model path does not exist"):
        carry_delta(moved, tmp_path / "out", strength=0.5)
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_base_moved_asks_for_model(models, lora_run, tmp_path: Path) -> None:
    import shutil

    moved = shutil.copytree(lora_run, tmp_path / "run", ignore=shutil.ignore_patterns(".cache", "logs"))
    for name, key in (("adapter_config.json", "base_model_name_or_path"), ("training_summary.json", "model")):
        data = json.loads((moved / name).read_text())
        data[key] = str(tmp_path / "gone")
        (moved / name).write_text(json.dumps(data))
    with pytest.raises(
        InputError, match=r"/run: the run's base model '.*gone' cannot be found .* give --model"
    ):
        read_run(moved)
    run = read_run(moved, base=str(models["base"]))
    assert run.base == str(models["base"]) and run.adapter_dir == moved


def _cli(argv: list[str]) -> tuple[int, str]:
    from rich.console import Console

    from qckit.cli import main

    console = Console(width=300, record=True, force_terminal=False)
    status = main(argv, console=console, stderr=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    return status, console.export_text()


def test_cli_export_takes_the_run_folder_and_infers_gguf(models, lora_run, tmp_path: Path) -> None:
    from qckit.gguf_export import iter_tensor_names

    status, text = _cli(["export", str(lora_run), "--output", str(tmp_path / "run.gguf")])
    assert status == 0 and "merged model written to" in text and "(gguf, f16)" in text
    assert dict(iter_tensor_names(tmp_path / "run.gguf"))["blk.0.attn_q.weight"] == "F16"
    status, text = _cli(
        ["export", str(lora_run), "--format", "safetensors", "--output", str(tmp_path / "x.gguf")]
    )
    assert status == 3 and not (tmp_path / "x.gguf").exists()
    # the documented flags still work, with the format inferred too
    status, _ = _cli(
        [
            "export",
            "--model",
            str(models["base"]),
            "--adapter",
            str(lora_run),
            "--output",
            str(tmp_path / "flags.gguf"),
        ]
    )
    assert status == 0 and (tmp_path / "flags.gguf").is_file()
    assert _cli(["export", "--output", str(tmp_path / "y")])[0] == 2
    assert (
        _cli(
            [
                "export",
                "--model",
                str(models["base"]),
                "--onto",
                str(models["sibling"]),
                "--output",
                str(tmp_path / "y"),
            ]
        )[0]
        == 2
    )
    assert (
        _cli(["export", str(lora_run), "--adapter", str(lora_run), "--output", str(tmp_path / "y")])[0] == 2
    )
    assert not (tmp_path / "y").exists()


def test_cli_onto_then_evaluate_the_result(models, lora_run, tmp_path: Path) -> None:
    out = tmp_path / "quebec-instruct"
    argv = [
        "export",
        str(lora_run),
        "--onto",
        str(models["sibling"]),
        "--strength",
        "0.5",
        "--output",
        str(out),
    ]
    status, text = _cli(argv)
    assert status == 0 and "the run's delta × 0.5 onto" in text and (out / EXPORT_RECORD).is_file()
    # the run's eval sets (its recipe's val_file), measured on the result
    recipe = tmp_path / "recipe.toml"
    data = lora_run.parent
    recipe.write_text(
        f'[train]\nmodel = "{models["base"]}"\ntrain_file = "{data / "train.txt"}"\nval_file = "{data / "val.txt"}"\n',
        encoding="utf-8",
    )
    status, text = _cli(
        ["evaluate", "--model", str(out), "--recipe", str(recipe), "--max_length", "32", "--json"]
    )
    assert status == 0, text
    numbers = json.loads(text)
    assert numbers["model"] == str(out) and math.isfinite(numbers["sets"]["val"]["bits_per_byte"])
