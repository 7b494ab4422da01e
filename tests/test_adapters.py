"""The built-in model adapters (plugins/qckit_builtins/adapters/): lora, 4bit, 8bit, fsdp."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from qckit.errors import HardwareError, RecipeError
from qckit.hardware import Environment
from qckit.host import PluginHost
from qckit.models import enable_gradient_checkpointing, load_model, resolve_model
from qckit_builtins.adapters import EightBitAdapter, FourBitAdapter, FsdpAdapter, LoraAdapter

SEED_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CPU = Environment(device="cpu", cpu_count=2, bitsandbytes_version="0.50.2")
CPU_NO_BNB = Environment(device="cpu", cpu_count=2, bitsandbytes_version=None)
GPUS = Environment(
    device="cuda",
    gpu_count=2,
    gpu_names=("NVIDIA H100",) * 2,
    cuda_capability=(9, 0),
    bf16_supported=True,
    fp16_supported=True,
    world_size=2,
    rank=1,
    local_rank=1,
    bitsandbytes_version="0.50.2",
)
ONE_GPU = Environment(
    device="cuda",
    gpu_count=1,
    gpu_names=("NVIDIA A10",),
    cuda_capability=(8, 6),
    bf16_supported=True,
    fp16_supported=True,
    bitsandbytes_version="0.50.2",
)
needs_bnb = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed"
)


def _check_all(adapters: list, env: Environment) -> None:
    names = [a.name for a in adapters]
    for adapter in adapters:
        adapter.check(env, names)


def _build(model_dir: Path, adapters: list, env: Environment):
    """What the train loop does: check, load with the adapters' kwargs, wrap."""
    _check_all(adapters, env)
    kwargs: dict = {}
    for adapter in adapters:
        adapter.load_kwargs(kwargs, env)
    model = load_model(resolve_model(str(model_dir)), dtype=torch.float32, extra_kwargs=kwargs)
    for adapter in adapters:
        model = adapter.wrap_model(model, env)
    return model


def _trainable(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


# -- registration and parameters ----------------------------------------------------------------------


def test_adapters_are_registered_by_the_builtin_plugin() -> None:
    host = PluginHost.from_entry_points()
    assert {"lora", "4bit", "8bit", "fsdp"} <= set(host.names("adapter"))
    assert host.get("adapter", "lora").cls is LoraAdapter


def test_parameters_and_defaults() -> None:
    def defaults(cls):
        return {n: p.default for n, p in inspect.signature(cls).parameters.items()}

    assert defaults(LoraAdapter) == {
        "r": 16,
        "alpha": 32,
        "dropout": 0.1,
        "target_modules": tuple(SEED_TARGETS),
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "loraplus_lr_ratio": 0.0,
        "train_embeddings": False,
        "embedding_learning_rate": None,
    }
    assert defaults(FourBitAdapter) == {"quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"}
    assert defaults(EightBitAdapter) == {}
    assert defaults(FsdpAdapter) == {
        "strategy": "full_shard auto_wrap",
        "layer_cls": None,
        "version": 2,
        "cpu_ram_efficient_loading": True,
    }
    # qckit.train loads a frozen base in half precision only when an adapter says it freezes it
    assert LoraAdapter.freezes_base_model is True
    assert not any(cls.freezes_base_model for cls in (FourBitAdapter, EightBitAdapter, FsdpAdapter))


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (LoraAdapter, {"r": 0}, "r must be"),
        (LoraAdapter, {"dropout": 1.0}, "dropout"),
        (LoraAdapter, {"bias": "some"}, "bias"),
        (LoraAdapter, {"target_modules": []}, "target_modules"),
        (FourBitAdapter, {"quant_type": "int4"}, "quant_type"),
        (FourBitAdapter, {"compute_dtype": "fp8"}, "compute_dtype"),
        (FsdpAdapter, {"strategy": "full_shard autowrap"}, "unknown fsdp strategy word 'autowrap'"),
        (FsdpAdapter, {"strategy": "full_shard shard_grad_op"}, "several sharding modes"),
        (FsdpAdapter, {"strategy": "hybrid_shard"}, "only in FSDP1"),
        (FsdpAdapter, {"version": 3}, "version"),
    ],
)
def test_invalid_settings(cls, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


# -- incompatible combinations fail in check, before loading ---------------------------------------------


@pytest.mark.parametrize(
    ("names", "env", "message"),
    [
        (["lora", "4bit"], CPU_NO_BNB, "pip install bitsandbytes"),
        (["8bit", "lora"], CPU_NO_BNB, "pip install bitsandbytes"),
        (["lora", "4bit", "8bit"], CPU, "cannot be combined"),
        (["4bit"], CPU, "cannot be fully fine-tuned; add the lora adapter"),
        (["8bit"], GPUS, "cannot be fully fine-tuned; add the lora adapter"),
        (["lora", "8bit", "fsdp"], GPUS, "8-bit weights cannot be sharded by FSDP; use the 4bit adapter"),
        (["lora", "4bit", "fsdp"], CPU, "needs CUDA"),
        (["fsdp"], CPU, "FSDP needs CUDA GPUs (found none)"),
        (["lora", "fsdp"], ONE_GPU, "torchrun --nproc_per_node N"),
    ],
)
def test_incompatible_combinations(names: list[str], env: Environment, message: str) -> None:
    adapters = {"lora": LoraAdapter, "4bit": FourBitAdapter, "8bit": EightBitAdapter, "fsdp": FsdpAdapter}
    for order in (names, list(reversed(names))):  # the recipe's order does not matter
        with pytest.raises(HardwareError) as err:
            _check_all([adapters[n]() for n in order], env)
        assert message in str(err.value)


def test_fsdp_on_cpu_says_what_trainer_would_do() -> None:
    with pytest.raises(HardwareError) as err:
        FsdpAdapter().check(CPU, ["fsdp"])
    message = str(err.value)
    assert "falls back to plain DDP" in message and "Remove the fsdp adapter" in message


def test_fourbit_compute_dtype_checks() -> None:
    with pytest.raises(HardwareError, match='compute_dtype = "auto"'):
        FourBitAdapter(compute_dtype="fp16").check(CPU, ["lora", "4bit"])
    with pytest.raises(HardwareError, match="bf16"):
        FourBitAdapter(compute_dtype="bf16").check(CPU, ["lora", "4bit"])  # this CPU env has no bf16


def test_valid_combinations_pass_check() -> None:
    _check_all([LoraAdapter(), FourBitAdapter(), FsdpAdapter()], GPUS)
    _check_all([FsdpAdapter()], GPUS)
    _check_all([LoraAdapter(), EightBitAdapter()], CPU)
    _check_all([FourBitAdapter(), LoraAdapter()], ONE_GPU)


# -- load kwargs ----------------------------------------------------------------------------------------


@needs_bnb
def test_fourbit_load_kwargs_with_fsdp_store_in_the_compute_dtype() -> None:
    adapter = FourBitAdapter()
    adapter.check(GPUS, ["lora", "4bit", "fsdp"])
    kwargs: dict = {}
    adapter.load_kwargs(kwargs, GPUS)
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.bnb_4bit_quant_storage == torch.bfloat16
    assert kwargs["dtype"] == torch.bfloat16
    assert kwargs["device_map"] == {"": 1}  # this process's GPU (local rank 1)


@needs_bnb
def test_fourbit_load_kwargs_on_cpu_and_without_fsdp() -> None:
    adapter = FourBitAdapter(quant_type="fp4", double_quant=False)
    adapter.check(CPU, ["4bit", "lora"])
    kwargs: dict = {}
    adapter.load_kwargs(kwargs, CPU)
    config = kwargs["quantization_config"]
    assert config.bnb_4bit_quant_type == "fp4" and not config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert config.bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' default: not sharded
    assert "device_map" not in kwargs and "dtype" not in kwargs


@needs_bnb
def test_eightbit_load_kwargs() -> None:
    kwargs: dict = {}
    EightBitAdapter().load_kwargs(kwargs, ONE_GPU)
    assert kwargs["quantization_config"].load_in_8bit and kwargs["device_map"] == {"": 0}


# -- lora ------------------------------------------------------------------------------------------------


def test_lora_with_seed_defaults(tiny_model_dir: Path) -> None:
    lora = LoraAdapter()
    model = _build(tiny_model_dir, [lora], CPU)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (16, 32, 0.1, "none")
    assert set(config.target_modules) == set(SEED_TARGETS) and lora.adapted_modules == tuple(
        sorted(SEED_TARGETS)
    )
    trainable = _trainable(model)
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == 2.0 and q_proj.lora_dropout["default"].p == 0.1


def test_lora_target_the_model_lacks_is_a_recipe_error_listing_its_layers(tiny_model_dir: Path) -> None:
    lora = LoraAdapter(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "c_attn", "v_proj"))
    with pytest.raises(
        RecipeError,
        match=r"no linear layer named c_attn; its linear layers are: down_proj, gate_proj, k_proj, lm_head",
    ) as err:
        _build(tiny_model_dir, [lora], CPU)
    assert err.value.key == "train.adapters.lora.target_modules" and '"auto"' in str(err.value)


def test_without_lora_the_whole_model_trains(tiny_model_dir: Path) -> None:
    model = _build(tiny_model_dir, [], CPU)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(_trainable(model)) == len(list(model.parameters()))
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_lora_trains_with_gradient_checkpointing(tiny_model_dir: Path) -> None:
    model = _build(tiny_model_dir, [LoraAdapter(r=4, alpha=8)], CPU)
    enable_gradient_checkpointing(model).train()
    input_ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


# -- quantized bases with LoRA, for real on CPU (bitsandbytes >= 0.49 runs there) ------------------------------


@needs_bnb
@pytest.mark.parametrize("quant", ["8bit", "4bit"])
@pytest.mark.parametrize("lora_first", [True, False])
def test_lora_on_quantized_base_trains(tiny_model_dir: Path, quant: str, lora_first: bool) -> None:
    quantizer = FourBitAdapter() if quant == "4bit" else EightBitAdapter()
    lora = LoraAdapter(r=4, alpha=8, dropout=0.0)
    model = _build(tiny_model_dir, [lora, quantizer] if lora_first else [quantizer, lora], CPU)
    base = model.get_base_model()
    assert getattr(base, f"is_loaded_in_{quant}", False)
    layer_class = type(base.model.layers[0].self_attn.q_proj.base_layer).__name__
    assert layer_class == ("Linear4bit" if quant == "4bit" else "Linear8bitLt")
    trainable = _trainable(model)
    assert trainable and all("lora_" in n for n in trainable)

    enable_gradient_checkpointing(model).train()
    input_ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=input_ids, labels=input_ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    b_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert b_grads and all(g is not None and g.abs().sum() > 0 for g in b_grads)


# -- fsdp training arguments (decision logic with a fabricated multi-GPU environment) ------------------------


def test_fsdp_training_args(tiny_model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from transformers import TrainingArguments

    fsdp = FsdpAdapter()
    fsdp.check(GPUS, ["lora", "fsdp"])
    args: dict = {"output_dir": str(tmp_path), "activation_checkpointing": True, "report_to": []}
    fsdp.training_args(args, tiny_model, GPUS)
    assert args["fsdp"] is True
    assert "activation_checkpointing" not in args  # FSDP's own checkpointing instead
    config = args["fsdp_config"]
    assert config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert config["version"] == 2 and config["reshard_after_forward"] is True
    assert (
        config["activation_checkpointing"] is True and config["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    )

    assert any("gradient checkpointing is done by FSDP" in note for note in fsdp.notes)

    # transformers understands every key (this only builds the arguments; nothing is sharded on CPU)
    monkeypatch.setenv(
        "FSDP_CPU_RAM_EFFICIENT_LOADING", "false"
    )  # TrainingArguments writes it; restored after
    plugin = TrainingArguments(**args).fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["activation_checkpointing"] is True and plugin["reshard_after_forward"] is True


def test_fsdp_training_args_options_and_layer_override(tiny_model) -> None:
    from qckit_builtins.adapters import LoraAdapter as Lora

    model = Lora(r=2, alpha=4).wrap_model(tiny_model, GPUS)  # detection sees through peft
    args: dict = {"fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}
    FsdpAdapter(strategy="shard_grad_op offload", layer_cls="MyBlock").training_args(args, model, GPUS)
    config = args["fsdp_config"]
    assert config["transformer_layer_cls_to_wrap"] == ["MyBlock"]
    assert config["reshard_after_forward"] is False and config["cpu_offload"] is True
    assert config["state_dict_type"] == "SHARDED_STATE_DICT"  # kept
    assert "activation_checkpointing" not in config

    args = {}
    FsdpAdapter(strategy="hybrid_shard", version=1).training_args(args, model, GPUS)
    assert (
        args["fsdp_config"]["version"] == 1 and args["fsdp_config"]["reshard_after_forward"] == "hybrid_shard"
    )
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]


def test_adapters_are_picklable() -> None:
    import pickle

    for adapter in (LoraAdapter(), FourBitAdapter(), EightBitAdapter(), FsdpAdapter(layer_cls="X")):
        clone = pickle.loads(pickle.dumps(adapter))
        assert type(clone) is type(adapter) and vars(clone) == vars(adapter)
