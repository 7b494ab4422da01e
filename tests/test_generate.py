"""``qckit generate`` and the completions behind it: greedy and reproducible, from any model a user holds."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from qckit.cli import main
from qckit.errors import InputError, QckitError
from qckit.generate import GenerationSettings, complete, load_for_generation, read_prompts
from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["Le chat", "Y fait frette"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    from qckit.train import run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    tmp = tmp_path_factory.mktemp("generate")
    train = write_corpus(tmp / "train.txt", list(SAMPLE_SENTENCES) * 2)
    settings = tiny_train_settings([train], tmp / "model", tiny_model_dir, max_steps=3, inspect_data=False)
    run_train(settings, WindowChunker(max_length=32, stride=0, min_length=8), [LoraAdapter(r=4)])
    return tmp / "model"


def _greedy(model, tokenizer, prompt: str, n: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        for _ in range(n):
            token = model(ids).logits[0, -1].argmax()
            if token.item() == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
    start = len(tokenizer(prompt).input_ids)
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def test_greedy_completions_are_the_argmax_continuation(tiny_model, tiny_tokenizer):
    settings = GenerationSettings(max_new_tokens=6)
    tiny_model.train()
    got = complete(tiny_model, tiny_tokenizer, PROMPTS, settings)
    assert tiny_model.training and all(m.training for m in tiny_model.modules())  # modes restored
    tiny_model.eval()
    assert got == [_greedy(tiny_model, tiny_tokenizer, p, 6) for p in PROMPTS]


def test_sampling_is_reproducible_from_its_seed(tiny_model, tiny_tokenizer):
    sampled = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    first = complete(tiny_model, tiny_tokenizer, PROMPTS, sampled)
    assert complete(tiny_model, tiny_tokenizer, PROMPTS, sampled) == first
    # a prompt's completion does not depend on the prompts before it
    assert complete(tiny_model, tiny_tokenizer, PROMPTS[1:], sampled) == first[1:]
    # nor does it touch the caller's random state
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    complete(tiny_model, tiny_tokenizer, PROMPTS, sampled)
    assert torch.equal(torch.rand(3), expected)


def test_bad_settings_and_prompt_files_are_one_line(tmp_path):
    with pytest.raises(QckitError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(QckitError, match="temperature"):
        GenerationSettings(temperature=0)
    (tmp_path / "p.txt").write_text("un\n\ndeux\n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.txt") == ["un", "deux"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "un"}\n{"text": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.jsonl:2"):
        read_prompts(tmp_path / "p.jsonl")


def test_a_run_folder_generates_with_its_adapter_and_beside_its_base(run_dir, tiny_model_dir):
    from qckit.models import load_merged

    settings = GenerationSettings(max_new_tokens=5)
    trained = load_for_generation(str(run_dir))
    merged, tokenizer, _ = load_merged(str(tiny_model_dir), run_dir)
    assert complete(trained.model, trained.tokenizer, PROMPTS, settings) == complete(
        merged, tokenizer, PROMPTS, settings
    )
    base = load_for_generation(str(run_dir), base=True)
    assert base.base_reference == str(tiny_model_dir.resolve())
    plain, plain_tokenizer, _ = load_merged(str(tiny_model_dir))
    assert complete(base.model, base.tokenizer, PROMPTS, settings) == complete(
        plain, plain_tokenizer, PROMPTS, settings
    )


def test_cli_generate_prints_base_and_trained_side_by_side(run_dir, tmp_path):
    console = Console(width=100, record=True, force_terminal=False)
    status = main(
        ["generate", str(run_dir), *PROMPTS, "--base", "--max-new-tokens", "4", "--json"], console=console
    )
    assert status == 0
    rows = json.loads(console.export_text())
    assert [row["prompt"] for row in rows] == PROMPTS and all({"base", "trained"} <= set(row) for row in rows)

    console = Console(width=80, record=True, force_terminal=False)
    assert main(["generate", str(run_dir), "[bold]x[/bold]", "--max-new-tokens", "2"], console=console) == 0
    text = console.export_text()
    assert "[bold]x[/bold]" in text and "trained" in text  # prompts shown literally

    console = Console(width=80, record=True, force_terminal=False)
    assert main(["generate", str(run_dir)], console=console) == QckitError.exit_code
    assert "no prompt" in console.export_text()


def test_a_gguf_file_generates_like_its_dequantized_model(tmp_path):
    from qckit.models import load_merged
    from qckit.testing import save_tiny_gguf

    gguf = save_tiny_gguf(tmp_path / "tiny.Q8_0.gguf")
    settings = GenerationSettings(max_new_tokens=5)
    loaded = load_for_generation(str(gguf))
    model, tokenizer, _ = load_merged(str(gguf))
    assert complete(loaded.model, loaded.tokenizer, PROMPTS, settings) == complete(
        model, tokenizer, PROMPTS, settings
    )
    console = Console(width=100, record=True, force_terminal=False)
    assert main(["generate", str(gguf), PROMPTS[0], "--max-new-tokens", "3", "--json"], console=console) == 0
    assert json.loads(console.export_text())[0]["prompt"] == PROMPTS[0]
