"""The one scoring engine of every eval kind: summed log-probabilities of continuations given contexts.

A *request* is a pair of token-id sequences ``(context, continuation)``, both non-empty. Its score is
``sum_i log p(continuation[i] | context, continuation[:i])``, computed the way lm-evaluation-harness
0.4.x computes ``_loglikelihood_tokens`` for a causal model: the model reads
``(context + continuation)[-(max_length + 1):][:-1]`` (left-truncated to ``max_length`` tokens) and
the last ``len(continuation)`` positions of its output predict the continuation. Requests are sorted
by length (longest first) and batched up to a budget of padded tokens per forward pass, padded on the
right with no attention mask: with causal attention a position never sees the padding after it, so a
request's score does not depend on what it was batched with.

The pieces the kinds build their requests from are here too: :func:`prefix_token_id` (the token
that stands before a text scored with no context: lm-eval's rule, BOS if the tokenizer has one, else
EOS), :func:`rolling_windows` (lm-eval's ``get_rolling_token_windows`` with ``context_len=1`` followed
by ``make_disjoint_window``) and :func:`encode_pairs` (lm-eval's ``_encode_pair``: trailing spaces of
the context move to the continuation, the continuation's tokens are those of the whole string after
the context's).

Text is encoded as lm-eval's ``tok_encode`` encodes it, ``tokenizer.encode(text)``: the string of a
special token (``</s>``, ``<|im_end|>``) becomes that token (:func:`text_encoder`;
``split_special_tokens=True`` encodes it as plain text instead, as training's packing does). Unlike
lm-eval, no special token is *added* (``add_special_tokens=False``): a tokenizer that adds a BOS of
its own would otherwise get it after the prefix token.

``max_length`` defaults to the model's context length by lm-eval's rule (:func:`context_length`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qckit.documents import BatchEncoder
from qckit.errors import QckitError
from qckit.progress import NullObserver, Observer

__all__ = [
    "Request",
    "Scorer",
    "EvalContext",
    "positions_cap",
    "prefix_token_id",
    "rolling_windows",
    "encode_pairs",
    "text_encoder",
    "context_length",
    "resolve_max_length",
    "request_problem",
    "model_device",
    "eval_mode",
]

#: ``(context, continuation)`` token ids, both non-empty
Request = tuple[Sequence[int], Sequence[int]]

#: lm-eval's context length when neither the model's config nor its tokenizer gives one
DEFAULT_CONTEXT_LENGTH = 2048
#: the ``model_max_length`` of a tokenizer that sets none (``transformers``' ``VERY_LARGE_INTEGER``)
TOKENIZER_INFINITY = int(1e30)
#: the config attributes that give a model's context length, in the order lm-eval reads them
CONTEXT_LENGTH_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")


def context_length(config: Any, tokenizer: Any) -> int:
    """The longest input of a model as lm-evaluation-harness 0.4.13's ``HFLM.max_length`` finds it.

    The first of ``n_positions``, ``max_position_embeddings``, ``n_ctx`` set on the model's ``config``
    (on its ``text_config`` when it has one), else the tokenizer's ``model_max_length`` unless it is
    the "no limit" value, else :data:`DEFAULT_CONTEXT_LENGTH`.
    """
    config = getattr(config, "text_config", None) or config
    for attr in CONTEXT_LENGTH_ATTRS:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_CONTEXT_LENGTH


def prefix_token_id(tokenizer: Any, override: str | int | None = None) -> int:
    """The token placed before a text that is scored without context.

    ``override`` (a token string such as ``"</s>"`` or an id) wins; otherwise the tokenizer's BOS
    token if it has one, else its EOS token, as lm-evaluation-harness's Hugging Face model does.
    Raises :class:`ValueError` for an override the vocabulary does not have, and
    :class:`~qckit.errors.QckitError` for a tokenizer with neither BOS nor EOS.
    """
    if override is not None:
        vocab_size = len(tokenizer)
        if isinstance(override, int) and not isinstance(override, bool):
            if not 0 <= override < vocab_size:
                raise ValueError(
                    f"prefix_token {override} is not a token id (the vocabulary has {vocab_size})"
                )
            return override
        token_id = tokenizer.get_vocab().get(override)
        if token_id is None:
            raise ValueError(f"prefix_token {override!r} is not a token of this tokenizer")
        return int(token_id)
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise QckitError("the tokenizer has neither a BOS nor an EOS token to put before a scored text")


def rolling_windows(tokens: Sequence[int], prefix: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(context, continuation)`` requests that predict every token of ``tokens`` exactly once.

    The first window predicts the first ``max_length`` tokens after the prefix token. Each later one
    predicts the next ``max_length`` tokens (fewer in the last) and reads as much of the text before
    them as fits in ``max_length`` input tokens: one token for a full window, more for the last.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        end = min(done + max_length, len(tokens))
        windows.append((tokens[end - max_length - 1 : done], tokens[done:end]))
        done = end
    return windows


def text_encoder(tokenizer: Any, split_special_tokens: bool = False) -> BatchEncoder:
    """Encodes batches of texts without adding special tokens. By default a special token's string
    becomes the special token (lm-eval's ``tokenizer.encode``); ``split_special_tokens=True`` encodes
    it as plain text (training's packing)."""
    return BatchEncoder(tokenizer, split_special_tokens=split_special_tokens)


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], prefix: int, *, split_special_tokens: bool = False
) -> list[tuple[list[int], list[int]]]:
    """Token ids of ``(context, continuation)`` text pairs, split the way lm-eval splits them.

    Whitespace at the end of the context moves to the start of the continuation; the continuation's
    ids are those of ``context + continuation`` after the context's own ids; an empty context becomes
    the ``prefix`` token, unless the continuation's first token *is* the prefix token (its text starts
    with that token's string): then that token is the context, as in lm-eval. Text is encoded by
    :func:`text_encoder`. A continuation that comes out empty yields an empty list
    (:func:`request_problem` names it; the kinds count such rows as bad).
    """
    encode = text_encoder(tokenizer, split_special_tokens)
    moved = []
    for context, continuation in pairs:
        stripped = context.rstrip()
        moved.append((stripped, context[len(stripped) :] + continuation))
    with_context = [i for i, (context, _) in enumerate(moved) if context]
    whole = encode([moved[i][0] + moved[i][1] for i in with_context])
    contexts = encode([moved[i][0] for i in with_context])
    bare = [i for i, (context, _) in enumerate(moved) if not context]
    alone = encode([moved[i][1] for i in bare])
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(pairs)
    for i, full, ctx in zip(with_context, whole, contexts, strict=True):
        out[i] = (list(ctx), list(full[len(ctx) :]))
    for i, cont in zip(bare, alone, strict=True):
        out[i] = (list(cont[:1]), list(cont[1:])) if cont and cont[0] == prefix else ([prefix], list(cont))
    return out


def request_problem(request: Request, max_length: int) -> str | None:
    """Why the scorer cannot score ``request``: its continuation has no token, or more than
    ``max_length`` (the window holds the continuation whole); ``None`` when it can."""
    continuation = request[1]
    if not continuation:
        return "the text to score encodes to no token"
    if len(continuation) > max_length:
        return f"the text to score is {len(continuation)} tokens, more than max_length {max_length}"
    return None


def model_device(model: Any) -> torch.device:
    """The device of ``model`` (its ``device`` attribute, else its first parameter's)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Eval mode and no autograd for the block; every module's own train/eval mode is restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes:
            module.training = training


@dataclass
class Scorer:
    """Scores requests on a model: :meth:`loglikelihoods`. One per evaluation setting, reused across calls.

    ``batch_tokens`` bounds the padded tokens of one forward pass (memory grows with it times the
    vocabulary). ``truncated`` counts the requests whose context was cut on the left to fit
    ``max_length`` since the scorer was made.
    """

    max_length: int
    batch_tokens: int = 4096
    device: str | torch.device | None = None
    observer: Observer = field(default_factory=NullObserver)
    truncated: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")
        if self.batch_tokens < 1:
            raise ValueError("batch_tokens must be at least 1")

    def loglikelihoods(self, model: Any, requests: Sequence[Request], task: str = "evaluate") -> np.ndarray:
        """``float64`` summed log-probability of each request's continuation (see the module docstring).

        Progress goes to the observer as task ``task``, in requests. Works with plain and peft models;
        every module's train/eval mode is restored afterwards.
        """
        inputs: list[np.ndarray] = []
        lengths = np.zeros(len(requests), dtype=np.int64)
        for i, (context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ValueError(f"request {i}: context and continuation must both be non-empty")
            if len(continuation) > self.max_length:
                raise ValueError(
                    f"request {i}: a continuation of {len(continuation)} tokens exceeds max_length"
                )
            if len(context) + len(continuation) > self.max_length + 1:
                self.truncated += 1
            whole = np.fromiter((*context, *continuation), dtype=np.int64)
            inputs.append(whole[-(self.max_length + 1) :][:-1])
            lengths[i] = len(inputs[-1])
        scores = np.zeros(len(requests), dtype=np.float64)
        order = np.argsort(-lengths, kind="stable")
        device = torch.device(self.device) if self.device is not None else model_device(model)
        self.observer.start(task, len(requests), "requests")
        try:
            with eval_mode(model):
                for batch in self._batches(order, lengths):
                    scores[batch] = self._score_batch(model, batch, inputs, requests, device)
                    self.observer.advance(task, len(batch))
        finally:
            self.observer.finish(task)
        return scores

    def _batches(self, order: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])  # the longest of the batch: requests come longest first
            rows = max(1, self.batch_tokens // max(width, 1))
            yield order[start : start + rows]
            start += rows

    def _score_batch(
        self,
        model: Any,
        batch: np.ndarray,
        inputs: list[np.ndarray],
        requests: Sequence[Request],
        device: torch.device,
    ) -> np.ndarray:
        width = max(len(inputs[i]) for i in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)  # right padding: never seen by real positions
        rows, positions, targets = [], [], []
        for row, i in enumerate(batch):
            inp, continuation = inputs[i], requests[i][1]
            ids[row, : len(inp)] = inp
            k = len(continuation)
            rows.append(np.full(k, row))
            positions.append(np.arange(len(inp) - k, len(inp)))
            targets.append(np.asarray(continuation, dtype=np.int64))
        logits = model(input_ids=torch.from_numpy(ids).to(device), use_cache=False).logits
        row_index = torch.from_numpy(np.concatenate(rows)).to(logits.device)
        pos_index = torch.from_numpy(np.concatenate(positions)).to(logits.device)
        target = torch.from_numpy(np.concatenate(targets)).to(logits.device)
        picked = torch.empty(len(target), dtype=torch.float64, device=logits.device)
        # a few thousand positions at a time: float32 log-softmax over a large vocabulary is big
        for lo in range(0, len(target), 2048):
            hi = lo + 2048
            chunk = logits[row_index[lo:hi], pos_index[lo:hi]].float().log_softmax(-1)
            picked[lo:hi] = chunk.gather(1, target[lo:hi, None])[:, 0].double()
        sums = torch.zeros(len(batch), dtype=torch.float64, device=logits.device)
        sums.index_add_(0, row_index, picked)
        return sums.cpu().numpy()


def positions_cap(model: Any, max_length: int, observer: Observer) -> int:
    """``max_length``, lowered (with a warning to ``observer``) to the model's ``max_position_embeddings``.
    Applies to a ``max_length`` that was asked for, not to :func:`context_length`'s."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 2 <= positions < max_length:
        observer.warn(
            f"evaluation max_length {max_length} is more than the model's {positions} positions; using {positions}"
        )
        return positions
    return max_length


def resolve_max_length(model: Any, tokenizer: Any, max_length: int, observer: Observer) -> int:
    """The ``max_length`` to score with: :func:`context_length` for 0, else :func:`positions_cap`'s."""
    if max_length:
        return positions_cap(model, max_length, observer)
    return context_length(getattr(model, "config", None), tokenizer)


#: the window a batch's token budget is counted in: ``batch_size`` × min(``max_length``, this). A model's
#: whole context (8192 tokens for SmolLM2) as the unit would hold ``batch_size`` × 8192 × the vocabulary
#: float32 logits at once (6 GB at batch 4); a request longer than the budget is scored alone.
BUDGET_WINDOW = 1024


def batch_tokens(batch_size: int, max_length: int) -> int:
    """The padded tokens one forward pass may hold (:data:`BUDGET_WINDOW`)."""
    return batch_size * min(max_length, BUDGET_WINDOW)


@dataclass
class EvalContext:
    """What every eval kind scores with: the tokenizer and the run's evaluation settings.

    :func:`batch_tokens` is the token budget of one forward pass; ``max_length`` is the
    longest input the model reads at once: 0 (the default) for the model's context length
    (:func:`context_length`, lm-eval's rule), else the value asked for, lowered to the model's positions
    when it has fewer.
    """

    tokenizer: Any
    max_length: int = 0
    batch_size: int = 4
    device: str | torch.device | None = None
    observer: Observer = field(default_factory=NullObserver)

    def scorer(self, model: Any, max_length: int = 0) -> Scorer:
        """A :class:`Scorer` for ``model`` (``max_length`` > 0 overrides the context's)."""
        length = resolve_max_length(model, self.tokenizer, max_length or self.max_length, self.observer)
        return Scorer(
            max_length=length,
            batch_tokens=batch_tokens(self.batch_size, length),
            device=self.device,
            observer=self.observer,
        )
