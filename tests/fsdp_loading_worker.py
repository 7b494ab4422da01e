"""One rank of ``tests/test_fsdp_loading.py``, launched twice by ``torch.distributed.run`` (gloo, CPU)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp_loading_worker.py MODEL TIED_MODEL OUT

Each rank loads the model as the train stage does under the fsdp adapter (the adapter decides whether
this rank reads the weights; ``qckit.models.load_model``), optionally grows its vocabulary and wraps it
in LoRA, then receives the weights the way accelerate's FSDP2 preparation does with
``cpu_ram_efficient_loading``: the model moved to the meta device, ``fully_shard`` on each decoder layer
and the root, then accelerate's own ``fsdp2_load_full_state_dict`` (broadcast from rank 0) and
``tie_weights``. accelerate's ``fsdp2_prepare_model`` itself cannot run here: accelerate sets up no FSDP
plugin on a CPU. Each rank writes what it saw, per scenario, into ``OUT/rank<N>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _full(tensor):
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def scenario(
    model_dir: Path, env, *, lora: bool = False, new_words: tuple[str, ...] = (), other_rotary: bool = False
) -> dict:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.utils.fsdp_utils import fsdp2_load_full_state_dict
    from torch.distributed.fsdp import fully_shard

    from qckit.errors import QckitError
    from qckit.models import find_decoder_layer_class, load_model, load_tokenizer, resolve_model, unwrap_model
    from qckit_builtins.adapters import FsdpAdapter, LoraAdapter

    fsdp = FsdpAdapter()
    adapters = [LoraAdapter(r=4, train_embeddings=True), fsdp] if lora else [fsdp]
    kwargs: dict = {"use_safetensors": True}
    for adapter in adapters:
        adapter.load_kwargs(kwargs, env)
    weights = all(a.loads_weights(kwargs, env) for a in adapters if hasattr(a, "loads_weights"))
    source = resolve_model(str(model_dir))
    model = load_model(source, dtype=torch.float32, extra_kwargs=kwargs, weights=weights)
    base = unwrap_model(model)
    seen: dict = {
        "reads_weights": weights,
        "tied_as_built": base.get_input_embeddings().weight is base.get_output_embeddings().weight,
        "meta_parameters": sum(p.is_meta for p in model.parameters()),
        "parameters": sum(1 for _ in model.parameters()),
        "meta_buffers": sum(b.is_meta for b in model.buffers()),
        "buffers": {n: b.tolist() for n, b in model.named_buffers()},
    }
    if new_words:
        from qckit.vocab import grow_embeddings, grow_tokenizer

        _, growth = grow_tokenizer(load_tokenizer(source), list(new_words))
        grow_embeddings(model, growth)
    if other_rotary:  # a buffer the broadcast does not send, computed otherwise than rank 0's
        model.model.rotary_emb.inv_freq.mul_(2)
    try:
        for adapter in adapters:
            model = adapter.wrap_model(model, env)
    except QckitError as exc:  # the layout check: every rank must refuse alike
        seen["refused"] = f"{type(exc).__name__}: {exc}"
        return seen
    seen["meta_after_wrapping"] = sum(p.is_meta for p in model.parameters())
    fsdp.training_args({}, model, env)
    seen["notes"] = list(fsdp.notes)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()} if env.is_main_process else None

    # accelerate's fsdp2_prepare_model with cpu_ram_efficient_loading, the sharding part
    original_sd = model.state_dict()
    model = model.to(torch.device("meta"))
    base = unwrap_model(model)
    base.tie_weights()
    layer = find_decoder_layer_class(model)
    for module in [m for m in model.modules() if type(m).__name__ == layer]:
        fully_shard(module)
    fully_shard(model)
    fsdp2_load_full_state_dict(Accelerator(cpu=True), model, original_sd)
    base.tie_weights()

    received = {k: _full(v).detach().clone() for k, v in model.state_dict().items()}
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, received)
    if sent is not None:
        seen["differing_from_rank0"] = [
            [k for k in sent if k not in other or not torch.equal(sent[k], other[k])] for other in gathered
        ]
    embeddings = base.get_input_embeddings().weight
    seen["tied"] = embeddings is base.get_output_embeddings().weight
    seen["rows"] = int(_full(embeddings).shape[0])
    return seen


def transformers_switch(model_dir: Path) -> dict:
    """What transformers' own FSDP loading switch does off local rank 0: how many parameters hold storage."""
    import os

    from transformers import AutoModelForCausalLM

    switch = {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}
    before = {name: os.environ.get(name) for name in switch}
    os.environ.update(switch)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"real_parameters": sum(not p.is_meta for p in model.parameters())}


def main(model_dir: str, tied_dir: str, out: str) -> None:
    import torch
    from accelerate import PartialState

    from qckit.hardware import detect_environment

    torch.set_num_threads(1)
    PartialState(cpu=True)  # the gloo process group, as the train stage sets it up
    env = detect_environment("cpu")
    words = ("frette", "dépanneur")
    runs = {
        "untied": scenario(Path(model_dir), env),
        "tied_new_tokens": scenario(Path(tied_dir), env, new_words=words),
        "lora": scenario(Path(model_dir), env, lora=True),
        "lora_tied_new_tokens": scenario(Path(tied_dir), env, lora=True, new_words=words),
        # a rank that builds another model than rank 0's: refused on every rank before any broadcast
        "mismatch": scenario(Path(model_dir), env, new_words=words if env.rank == 1 else ()),
        "other_rotary": scenario(Path(model_dir), env, other_rotary=env.rank == 1),
        "transformers_switch": transformers_switch(Path(model_dir)),
    }
    Path(out, f"rank{env.rank}.json").write_text(json.dumps(runs))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    main(*sys.argv[1:])
