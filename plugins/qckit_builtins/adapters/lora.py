"""The ``lora`` adapter: peft LoRA beside frozen linear layers (k-bit bases prepared here)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from qckit.errors import QckitError, RecipeError
from qckit.models import linear_module_names, unwrap_model

SEED_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: ``target_modules`` value that adapts every linear projection of the model except its output head
AUTO_TARGETS = "auto"
#: where a recipe sets this adapter's target modules (for error messages)
_TARGETS_KEY = "train.adapters.lora.target_modules"


class LoraAdapter:
    """Low-rank adaptation (peft LoRA): trains small ``r``-rank matrices beside frozen linear layers.

    Defaults are the seed's: r 16, alpha 32, dropout 0.1 on the attention and MLP projections of
    Llama-style models. ``target_modules = "auto"`` adapts every linear projection of any architecture
    (GPT-2's ``c_attn``/``c_proj``/``c_fc``, Qwen2's and Mistral's projections …) except the output
    head; a listed name the model does not have is an error that lists the names it has. Without this
    adapter the whole model is trained.

    Variants: ``use_dora`` (weight-decomposed LoRA: a trained magnitude per output feature),
    ``use_rslora`` (scaling ``alpha / sqrt(r)`` instead of ``alpha / r``), and ``loraplus_lr_ratio``
    (LoRA+: the B matrices, and the 1-D parameters such as DoRA magnitudes, learn ``ratio`` times
    faster than the A matrices; 0 = off, the paper suggests 16).

    ``train_embeddings = true`` also trains the input embeddings and the output head in full at
    ``embedding_learning_rate`` (the run's learning rate when left out): what new tokens need, and what
    lets the existing rows of dialect words move. An untied model's two matrices train as peft copies
    (``modules_to_save``); a tied model's one shared matrix trains in place, so the head stays tied to it.
    The adapter saves each trained matrix once (vocabulary × hidden × 4 bytes: what trains is float32),
    and peft alone loads it back: the tied matrix in peft's ``save_embedding_layers`` format, under the
    input embeddings' name, loaded into the base model itself, where the head shares it (so, as with any
    adapter in that format, ``disable_adapter()`` keeps the trained embeddings).
    """

    name: ClassVar[str] = "lora"
    #: only the adapter's own weights train; the base can be loaded in half precision (qckit.train reads this)
    freezes_base_model: ClassVar[bool] = True

    def __init__(
        self,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.1,
        target_modules: tuple[str, ...] | str = SEED_LORA_TARGETS,
        bias: str = "none",
        use_dora: bool = False,
        use_rslora: bool = False,
        loraplus_lr_ratio: float = 0.0,
        train_embeddings: bool = False,
        embedding_learning_rate: float | None = None,
    ) -> None:
        if r < 1:
            raise ValueError("r must be at least 1")
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if isinstance(target_modules, str):
            target_modules = (target_modules,)
        if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
            raise ValueError('target_modules must be "auto" or a non-empty list of module names')
        if AUTO_TARGETS in target_modules and len(target_modules) > 1:
            raise ValueError('target_modules is either "auto" or a list of module names, not both')
        if bias not in ("none", "all", "lora_only"):
            raise ValueError("bias must be 'none', 'all' or 'lora_only'")
        if not (loraplus_lr_ratio == 0 or 1 <= loraplus_lr_ratio < 1e4):
            raise ValueError("loraplus_lr_ratio must be 0 (LoRA+ off) or between 1 and 10000 (16 is usual)")
        if embedding_learning_rate is not None:
            if not train_embeddings:
                raise ValueError("embedding_learning_rate needs train_embeddings = true")
            if not 0 < embedding_learning_rate < 1:
                raise ValueError("embedding_learning_rate must be greater than 0 and below 1")
        if train_embeddings and "lm_head" in target_modules:
            raise ValueError("train_embeddings trains lm_head in full; remove it from target_modules")
        self.r = r
        self.alpha = alpha
        self.dropout = float(dropout)
        self.target_modules = tuple(target_modules)
        self.bias = bias
        self.use_dora = use_dora
        self.use_rslora = use_rslora
        self.loraplus_lr_ratio = float(loraplus_lr_ratio)
        self.train_embeddings = train_embeddings
        self.embedding_learning_rate = embedding_learning_rate
        #: the module names adapted, known after wrap_model (what "auto" resolved to)
        self.adapted_modules: tuple[str, ...] = ()
        #: one-line remarks for the run report, filled in by wrap_model
        self.notes: tuple[str, ...] = ()
        self._sharded = False

    @property
    def trains_embeddings(self) -> bool:
        """Whether the input embeddings (so the rows of new tokens) train (qckit.train reads this)."""
        return self.train_embeddings

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        self._sharded = "fsdp" in adapters

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        return None

    def wrap_model(self, model: Any, env: Any) -> Any:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if isinstance(model, PeftModel):
            raise QckitError("the model is already wrapped by peft; list the lora adapter only once")
        targets: list[str] | str
        if self.target_modules == (AUTO_TARGETS,):
            targets = "all-linear"  # peft: every linear/Conv1D layer except the output head
        else:
            available = linear_module_names(model)
            unknown = [t for t in self.target_modules if t not in available]
            if unknown:
                raise RecipeError(
                    f"{type(model).__name__} has no linear layer named {', '.join(unknown)}; its linear layers "
                    f'are: {", ".join(sorted(available)) or "none"} (or use target_modules = "auto")',
                    key=_TARGETS_KEY,
                )
            targets = list(self.target_modules)
        # An untied model's input embeddings and head train as peft copies (modules_to_save); a tied model's
        # one matrix trains in place, not as peft's ensure_weight_tying copy, which peft 0.22 saves under
        # both names and cannot load from one (the head's key is required): see _save_each_matrix_once.
        embeddings = _embedding_module_names(model) if self.train_embeddings else []
        in_place = bool(embeddings) and _ties_embeddings(model)
        modules_to_save = embeddings if embeddings and not in_place else None
        kbit = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if kbit and not (self._sharded and getattr(model, "is_loaded_in_4bit", False)):
            # Freezes the base, upcasts norms/embeddings to fp32 for stability. Checkpointing is the
            # train loop's call (see the module docstring), so it is not enabled here.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            bias=self.bias,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            modules_to_save=modules_to_save,
        )
        wrapped = get_peft_model(model, config)
        if in_place:
            unwrap_model(wrapped).get_input_embeddings().weight.requires_grad_(True)
        if embeddings:
            wrapped.save_pretrained = functools.partial(_save_each_matrix_once, wrapped, in_place)
        resolved = wrapped.peft_config["default"].target_modules
        self.adapted_modules = tuple(sorted({name.rsplit(".", 1)[-1] for name in resolved}))
        notes = [f"lora: adapting {', '.join(self.adapted_modules)}"]
        if embeddings:
            tied = " (tied: one matrix)" if in_place else ""
            notes.append(f"lora: training {' and '.join(embeddings)} in full{tied}")
        self.notes = tuple(notes)
        return wrapped

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        return None

    def optimizer_param_groups(self, model: Any, learning_rate: float) -> list[dict[str, Any]] | None:
        """Parameter groups with their own learning rates, or ``None`` when every parameter uses ``learning_rate``.

        LoRA+ (peft's ``create_loraplus_optimizer`` grouping rule): ``lora_B`` matrices and 1-D
        parameters at ``learning_rate * loraplus_lr_ratio``; the embeddings trained by
        ``train_embeddings`` (and LoRA layers on embeddings) at ``embedding_learning_rate``; the rest
        at ``learning_rate``. Empty groups are left out.
        """
        embedding_lr = self.embedding_learning_rate
        if not self.loraplus_lr_ratio and embedding_lr is None:
            return None
        from peft.tuners.lora.layer import Embedding as LoraEmbedding

        modules = dict(model.named_modules())
        embeddings = unwrap_model(model).get_input_embeddings().weight  # a tied model's, trained in place
        groups: dict[str, list[Any]] = {"base": [], "embedding": [], "lora_B": []}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            owner = modules.get(".".join(name.split(".")[:-2]))
            if ".modules_to_save." in name or isinstance(owner, LoraEmbedding) or param is embeddings:
                groups["embedding"].append(param)
            elif self.loraplus_lr_ratio and ("lora_B" in name or param.ndim == 1):
                groups["lora_B"].append(param)
            else:
                groups["base"].append(param)
        rates = {
            "base": learning_rate,
            "embedding": embedding_lr if embedding_lr is not None else learning_rate,
            "lora_B": learning_rate * (self.loraplus_lr_ratio or 1.0),
        }
        return [{"params": params, "lr": rates[key]} for key, params in groups.items() if params]


def _embedding_module_names(model: Any) -> list[str]:
    """Leaf names of the input embeddings and the output head (``embed_tokens``, ``lm_head``; ``wte`` …)."""
    base = unwrap_model(model)
    wanted = [base.get_input_embeddings(), base.get_output_embeddings()]
    names: list[str] = []
    for module in wanted:
        if module is None:
            continue
        for full_name, candidate in base.named_modules():
            if candidate is module:
                leaf = full_name.rsplit(".", 1)[-1]
                if leaf not in names:
                    names.append(leaf)
                break
    return names


def _save_each_matrix_once(model: Any, in_place: bool, save_directory: str, **kwargs: Any) -> None:
    """``model.save_pretrained`` of a LoRA model that trains the embeddings: each trained matrix saved once.

    Untied, the trained copies (``modules_to_save``) hold the matrices, grown ones included; peft's
    ``save_embedding_layers="auto"`` would also save the whole layers when the vocabulary was resized
    (three copies of each matrix, and keys that warn as unexpected on load), so it is off. Tied, the
    shared matrix trains in place and is saved in peft's ``save_embedding_layers`` format: under the
    input embeddings' name, which peft loads back into the base model, where the head shares it. The
    head's name for the same tensor is left out of the state dict: peft would save it as a second copy.
    """
    if in_place:
        state = kwargs.pop("state_dict", None)
        if state is None:
            state = model.state_dict()
        head = model.get_output_embeddings()
        head_name = next(name for name, module in model.named_modules() if module is head)
        kwargs["state_dict"] = {k: v for k, v in state.items() if not k.startswith(f"{head_name}.")}
    type(model).save_pretrained(model, save_directory, save_embedding_layers=in_place, **kwargs)


def _ties_embeddings(model: Any) -> bool:
    base = unwrap_model(model)
    head = base.get_output_embeddings()
    return head is not None and head.weight is base.get_input_embeddings().weight
