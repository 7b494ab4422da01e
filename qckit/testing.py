"""Helpers for tests, for qckit itself and for third-party plugin authors.

Everything here is built in-process, offline, in a few seconds and deterministically: a small
corpus of Quebec French sentences, a byte-level BPE tokenizer trained on it, and a tiny randomly
initialised Llama model whose vocabulary matches the tokenizer::

    from qckit.testing import SAMPLE_SENTENCES, save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")  # loads with AutoModelForCausalLM / AutoTokenizer

Nothing here downloads anything. ``transformers`` and ``tokenizers`` are imported lazily, so importing
this module is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from qckit.train.settings import TrainSettings

__all__ = [
    "QUEBEC_WORDS",
    "SAMPLE_SENTENCES",
    "BOS_TOKEN",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "train_tiny_tokenizer",
    "make_tiny_llama",
    "save_tiny_model",
    "save_tiny_gguf",
    "write_corpus",
    "tiny_train_settings",
    "FLOAT32_SUMS_RTOL",
    "approx_sums",
    "REFERENCE_FLASH_ATTENTION",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "register_reference_flash_attention",
]

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"

#: Quebec words to build many distinct synthetic documents from (tests that need a corpus of any size)
QUEBEC_WORDS: tuple[str, ...] = (
    "pis",
    "chum",
    "tuque",
    "frette",
    "dépanneur",
    "magasiner",
    "cabane",
    "sucre",
    "neige",
    "char",
    "blonde",
    "jaser",
    "icitte",
)

#: Short, natural Quebec French sentences (informal register, regional vocabulary, accents,
#: apostrophes). Usable as a corpus in tests; one sentence per document.
SAMPLE_SENTENCES: tuple[str, ...] = (
    "Je suis ben fatigué à soir, j'pense que j'vas me coucher de bonne heure.",
    "On s'en va au chalet en fin de semaine avec les enfants.",
    "Il fait frette en maudit ce matin, as-tu vu le thermomètre?",
    "Ma blonde pis moi, on a magasiné toute l'après-midi au centre d'achats.",
    "Arrête de niaiser pis viens m'aider à pelleter l'entrée.",
    "C'est plate, le dépanneur du coin est fermé le dimanche asteure.",
    "J'ai pogné un ticket en revenant de Québec, j'étais pas content.",
    "Mon chum travaille de nuit cette semaine, ça fait que je soupe tout seul.",
    "Veux-tu un café? Y'en reste encore dans la cafetière.",
    "Les Canadiens ont perdu encore hier soir, c'est rendu gênant.",
    "On a mangé une poutine au casse-croûte après la partie de hockey.",
    "Envoye, dépêche-toi, l'autobus passe dans cinq minutes!",
    "J'ai pas eu le temps de faire l'épicerie, on va commander du poulet.",
    "La tempête de neige a fermé les écoles dans toute la région.",
    "Y'a des bouchons sur le pont Jacques-Cartier, comme d'habitude.",
    "Ma grand-mère fait la meilleure tourtière du Lac-Saint-Jean.",
    "Je t'avais dit de barrer la porte avant de partir, voyons donc!",
    "On va aller aux sucres au mois de mars si la saison est bonne.",
    "C'est pas grave, on se reprendra la semaine prochaine.",
    "Mon char est encore au garage, le mécanicien trouve pas le problème.",
    "Les maringouins sont terribles au bord du lac cette année.",
    "J'ai vu ton frère au party de Noël, il avait l'air de bonne humeur.",
    "Faut que j'aille chercher les petits à la garderie avant six heures.",
    "Il a mouillé toute la journée, on est restés en dedans à jouer aux cartes.",
    "Le déménagement du premier juillet, c'est toujours la même folie.",
    "Tu peux-tu me passer le sel, s'il te plaît?",
    "Elle a lâché sa job pour retourner aux études à l'université.",
    "On s'est pratiquement gelés à attendre le traversier à Tadoussac.",
    "Mets ta tuque pis tes mitaines, il fait moins trente dehors.",
    "J'ai acheté des bleuets du Lac au marché, ils sont écoeurants.",
    "Le voisin a encore parti sa souffleuse à six heures du matin.",
    "Ça me tente pas pantoute d'aller travailler aujourd'hui.",
    "On a fêté la Saint-Jean dans le parc avec un grand feu de joie.",
    "Mon cellulaire est mort, je peux-tu emprunter ton chargeur?",
    "Il est tombé une bordée de neige pendant la nuit.",
    "Les vacances de la construction commencent la semaine prochaine.",
    "Je me suis fait une tasse de thé pis j'ai lu mon livre en paix.",
    "Le cégep offre un nouveau programme en techniques forestières.",
    "On a écouté le match au bar sportif avec toute la gang.",
    "Bonne fête! J'espère que tu vas avoir une belle journée.",
)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``, in-process and deterministically.

    Byte-level means every UTF-8 string round-trips through encode/decode, whatever its characters.
    The special tokens are ``<s>`` (bos, id 0), ``</s>`` (eos, id 1) and ``<pad>`` (pad, id 2). Like a
    Llama tokenizer, ``tokenizer(text)`` prepends ``<s>``; ``add_special_tokens=False`` gives the bare
    ids. The vocabulary may be smaller than ``vocab_size`` when the corpus is too small to learn that
    many merges; use ``len(tokenizer)`` for the model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError("vocab_size must be at least 300 (256 bytes + special tokens + a few merges)")
    special = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def make_tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    tied: bool = False,
) -> LlamaForCausalLM:
    """A randomly initialised, tiny ``LlamaForCausalLM`` (float32) whose vocabulary matches ``tokenizer``.

    The weights depend only on the arguments (the global torch RNG is left untouched). The config has
    the tokenizer's bos/eos/pad ids, ``intermediate_size = 2 * hidden_size``, 512 positions and
    untied input/output embeddings (so LoRA and adapters see a realistic layout), or with ``tied`` one
    matrix for both (``tie_word_embeddings``, as SmolLM2 and Llama-3.2-1B have).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError("hidden_size must be a multiple of num_heads")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=torch.float32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def save_tiny_model(
    directory: str | Path,
    texts: Sequence[str] = SAMPLE_SENTENCES,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    tied: bool = False,
) -> Path:
    """Train a tiny tokenizer on ``texts``, build a tiny Llama for it, save both (safetensors) in ``directory``.

    ``AutoModelForCausalLM.from_pretrained(directory)`` and ``AutoTokenizer.from_pretrained(directory)``
    load the result offline (``tied``: see :func:`make_tiny_llama`). Returns ``directory`` as a :class:`~pathlib.Path`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    model = make_tiny_llama(
        tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed, tied=tied
    )
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_gguf(
    path: str | Path,
    texts: Sequence[str] = SAMPLE_SENTENCES,
    *,
    outtype: str = "q8_0",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write the tiny Llama of :func:`save_tiny_model` (and its tokenizer) as one GGUF file at ``path``.

    ``outtype`` is a :data:`qckit.gguf_export.GGUF_OUTTYPES` value; the default ``q8_0`` makes a really
    quantized file, which transformers dequantizes on load like a downloaded one. Returns ``path``.
    """
    from qckit.gguf_export import write_gguf

    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    model = make_tiny_llama(
        tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed
    )
    return write_gguf(model, tokenizer, path, outtype=outtype, name="tiny-llama")


def tiny_train_settings(corpus: Sequence[Path], out: Path, model: Path, **overrides: Any) -> TrainSettings:
    """Settings for a few fast steps of a tiny model on ``corpus`` (train file, and validation file when
    there is a second): batch 4 without accumulation, learning rate 5e-3, a log line every step and no
    checkpoints, unless ``overrides`` (any :class:`~qckit.train.TrainSettings` field) say otherwise."""
    from qckit.train.settings import TrainSettings

    base: dict[str, Any] = dict(
        train_file=str(corpus[0]),
        val_file=str(corpus[1]) if len(corpus) > 1 else None,
        output_dir=str(out),
        model=str(model),
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        logging_steps=1,
        save_steps=0,
    )
    base.update(overrides)
    return TrainSettings(**base)


def write_corpus(path: str | Path, texts: Iterable[str]) -> Path:
    """Write ``texts`` to ``path`` (UTF-8), one document per line; newlines inside a text become spaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for text in texts:
            handle.write(" ".join(text.splitlines()) + "\n")
    return path


class Crash(Exception):
    """Stands for the process dying (kill -9) during a training step, after its checkpoints were written."""


def crash_at_step(step: int, exception: type[BaseException] = Crash) -> Any:
    """A :class:`~qckit.progress.RecordingObserver` that raises ``exception`` when training step ``step``
    ends (counting steps only: a logging step's report, ``amount`` 0, and a resume's are not steps)."""
    from qckit.progress import RecordingObserver

    class CrashAtStep(RecordingObserver):
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
            super().advance(task, amount, **fields)
            if task == "train" and amount and not fields.get("resumed"):
                self.seen += 1
                if self.seen == step:
                    raise exception

    return CrashAtStep()


#: how far two float32 computations of the same sums may differ, relative to the sums' magnitude (another
#: CPU's kernels, batch shape or summation order): far above the last bits that differ between machines,
#: far below any effect a test checks
FLOAT32_SUMS_RTOL = 1e-5


def approx_sums(
    expected: float | Sequence[float], *sums: float, rtol: float = FLOAT32_SUMS_RTOL, floor: float = 1e-6
) -> Any:
    """``pytest.approx(expected)`` for a number computed from float32 sums (a log-likelihood, a loss times
    its tokens, the difference of two log-likelihoods), with an absolute tolerance that follows the sums:
    ``rtol × (|s_1| + |s_2| + …) + floor``. ``sums`` default to ``expected`` itself (a sum; for a list,
    its largest magnitude).

    A relative tolerance on a *difference* of two sums does not follow their rounding: the rounding
    grows with the sums, the difference may be small (two sentence log-probabilities 0.0734797 apart on
    one CPU were 0.0734789 apart on another).
    """
    import pytest

    values = list(expected) if isinstance(expected, Sequence) else [expected]
    magnitude = sum(abs(s) for s in sums) if sums else max(abs(v) for v in values)
    return pytest.approx(expected, rel=0, abs=rtol * magnitude + floor)


#: the ``attn_implementation`` name of the pure-torch flash-attention stand-in (it contains "flash", so
#: transformers treats it as a flash kernel: its real wrapper, masks and padding-free path run)
REFERENCE_FLASH_ATTENTION = "qckit_flash_reference"


def _reference_attention(q: Any, k: Any, v: Any, causal: bool, softmax_scale: float | None) -> Any:
    """Exact attention of one sequence, flash layout ``(seq, heads, dim)``: softmax(QKᵀ·scale) V, the
    causal mask aligned bottom-right like flash-attention 2, key/value heads repeated for grouped queries."""
    import torch

    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    heads = q.shape[1]
    k = k.repeat_interleave(heads // k.shape[1], dim=1)
    v = v.repeat_interleave(heads // v.shape[1], dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    if causal:
        lq, lk = q.shape[0], k.shape[0]
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v.float()).to(q.dtype)


def flash_attn_func(
    q: Any, k: Any, v: Any, dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False
) -> Any:
    """``flash_attn.flash_attn_func`` in pure torch, exact (no dropout): ``(batch, seq, heads, dim)`` in,
    the same out; every row one sequence."""
    import torch

    return torch.stack(
        [_reference_attention(*row, causal, softmax_scale) for row in zip(q, k, v, strict=True)]
    )


def flash_attn_varlen_func(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
) -> Any:
    """``flash_attn.flash_attn_varlen_func`` in pure torch, exact (no dropout): ``(total, heads, dim)``
    tensors holding the sequences that ``cu_seqlens_*`` (cumulative lengths, ``0 … total``) delimit."""
    import torch

    bounds_q, bounds_k = (b.tolist() for b in (cu_seqlens_q, cu_seqlens_k))
    out = [
        _reference_attention(q[a:b], k[c:d], v[c:d], causal, softmax_scale)
        for a, b, c, d in zip(bounds_q, bounds_q[1:], bounds_k, bounds_k[1:], strict=False)
    ]
    return torch.cat(out) if out else q.new_empty(q.shape)


def register_reference_flash_attention(
    name: str = REFERENCE_FLASH_ATTENTION, *, dense: Any = None, varlen: Any = None
) -> str:
    """Make ``attn_implementation=name`` run transformers' real flash-attention wrapper
    (``integrations.flash_attention`` and ``_flash_attention_forward``: its dense, unpadded and
    padding-free paths) with ``dense`` / ``varlen`` as the kernels (default :func:`flash_attn_func` /
    :func:`flash_attn_varlen_func`), on any device. ``name`` must contain "flash" (transformers routes
    such names to its flash code). Registering a name again replaces its kernels; returns ``name``."""
    import transformers.modeling_flash_attention_utils as fa
    from transformers import AttentionInterface
    from transformers.integrations.flash_attention import flash_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if "flash" not in name:
        raise ValueError(f"{name!r}: a flash-attention stand-in's name must contain 'flash'")
    kernels = getattr(fa._lazy_imports, "qckit_kernels", None)
    if kernels is None:  # wrap the lookup lazy_import_flash_attention makes, once
        load, kernels = fa._lazy_imports, {}

        def lazy_imports(implementation: str | None, *args: Any, **kwargs: Any) -> tuple:
            if implementation not in kernels:
                return load(implementation, *args, **kwargs)
            return (*kernels[implementation], None, fa._pad_input, fa._unpad_input)

        lazy_imports.qckit_kernels = kernels  # type: ignore[attr-defined]
        fa._lazy_imports = lazy_imports
    kernels[name] = (dense or flash_attn_func, varlen or flash_attn_varlen_func)
    if fa._loaded_implementation == name:  # loaded with other kernels: load again on the next call
        fa._loaded_implementation = None
    AttentionInterface.register(name, flash_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"])
    return name
