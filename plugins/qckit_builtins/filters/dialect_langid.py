"""A language decision made for a Quebec French corpus: short, colloquial and code-switched text stays.

Why not the generic ``langid`` filter: among all of py3langid's languages, a three-word joual sentence
("Chu pas capable.") looks as much like Occitan, Walloon or a French creole as like French, so it falls
under any confidence threshold (the ``langid`` filter at 0.5 dropped 23 of a user's 55 colloquial
sentences that pass the seed's filters, and 59 % of the bench's short ones), and a sentence with one
English word is at the mercy of that word. The decision here, in order:

0. **Clearly French.** A document with at least ``distinctive_words`` (3) words of
   ``data/french_distinctive_words.txt`` (frequent French words that are no word of the other
   candidates: "nous", "avec", "dans", "une", "j'", "qu'" …), more of them than English words, making
   at least 5 % of its words and with English under ``max_english_share``, is French: the model is not
   asked (on the bench's corpus, 5 lines in 6; no sentence of the other languages' sets, tuning or
   held out, qualifies). The others go through the steps below.
1. **English share.** The share of the document's words found in ``data/english_words.txt`` (frequent
   English words that are not also French words) is measured and written to ``doc.meta``. A document
   is dropped as English (``lang:en``) only when English dominates (``max_english_share``); below that
   it is French with English in it, which is what a dialect corpus is for ("Je feel pas ben à soir").
2. **Candidates.** py3langid decides among the languages a Quebec corpus actually holds (``candidates``:
   French, English and the languages French is confused with on short text: es, it, pt, ca, ro, de,
   nl), not among all of them: the regional look-alikes that absorb short colloquial French are out.
3. **Length-aware confidence.** The French probability needed grows with the length: a short text
   cannot make any model sure, a long one that is French reaches 0.99. ``short_confidence`` (0.3) up
   to ``short_words`` (5) words, ``min_confidence`` (0.5) from ``long_words`` (15) words, linear in
   between. On the bench's tuning sets (``bench/data/langid/``) the other languages' French probability
   stays below 0.16; the held-out ones show the limit: three-word Czech and Hungarian sentences reach
   0.33 and 0.24, since languages outside the candidates can only be spread over them.
4. **French evidence rescues.** A document the model doubts is kept when it holds evidence a generic
   model does not weigh, and its French probability still reaches ``rescue_confidence`` (0.1): a Quebec
   marker (the ``quebec_markers`` tagger's list: "pantoute", "faque", "tuque"), or, when it holds English
   words, French function words (``data/french_stopwords.txt``) in what is left without them. The
   second follows how code-switching works: the function words come from the language the sentence is
   built in, so "Check ben ça." is French with an English verb; its French part is then classified on
   its own.
5. **Word evidence for what the n-grams cannot decide.** A text of three or four words holds too few
   character n-grams for py3langid: "On verra bien." is Spanish to it (es 0.42, fr 0.22) and the Quebec
   "ben" pulls toward Dutch and German ("On verra ben." de 0.31, nl 0.28); on 40 very short everyday
   sentences written after the steps above were set, 7 were dropped. Its words decide it: "verra" is
   a French word and no word of the other candidates. A document still dropped is scored a second
   time with its words: a naive-Bayes vote among the candidates (:mod:`qckit_builtins.lexicon`:
   wordfreq's word frequencies, a Quebec spelling looked up as the standard words it stands for, "ben"
   as "bien", "chu" as "je suis"), combined with py3langid's probabilities as independent evidence (the
   product, normalized over the candidates). It is kept (``lexicon``) when French gets at least
   ``lexicon_confidence`` (0.9) of the combination **and** every word is a French word (in wordfreq's
   French list, or a Quebec marker). Why both models: each fails where the other sees, "T'es ben fin."
   is Catalan to the n-grams (ca 0.45, fr 0.23) and Spanish-leaning to the words ("es", "fin": fr 0.71,
   es 0.29), French to both together (0.96); and a language the n-gram model is sure of keeps its
   veto. Why the coverage: the vote only compares the candidates, so a language outside them wins it
   for French on two accidental words (Swedish "Vi ses imorgon.": 0.87, combined 0.94), but its other
   words are no French words. On the tuning sets (``bench/data/langid/``) the Quebec and French
   sentences whose words are all French get 0.998 or more, the other languages' ones (all English: the
   French list holds English loanwords) 0.001 or less. The step runs only where everything else
   dropped the document, so it can keep a document and never drop one (``lexicon = false`` gives the
   decisions of the steps above).

Everything else is dropped with the reason ``lang:<code>``: the language the candidates identify, or,
when py3langid's full model is at least ``min_confidence`` sure of a language outside the candidates
(Polish, Swedish, Haitian Creole …), that one; ``low_confidence`` when French was the most likely but
short of the threshold. The prepare funnel counts drops per reason, so ``prepare_stats.json`` and the
report show what was dropped as which language.

Cost: the whole batch is decided at once. The words are counted in C (``accelerated.markerscan``),
py3langid's features of the documents in doubt are walked in C (``accelerated.textscan``) and scored in
one numpy pass (:mod:`qckit_builtins.langmodel`); the documents dropped as another candidate than
English are scored among all languages from the same features. The model's arrays are memory-mapped
from qckit's table cache, shared by the workers (read from py3langid once per cache). The word
frequencies are memory-mapped from the same cache too (~12 MB for the default candidates, shared; built
from wordfreq's lists once per cache) and looked up only for the documents every other step dropped
(a batch at a time, ~10 µs each).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any, ClassVar

from qckit.components import Document
from qckit_builtins import accelerated, langmodel, lexicon
from qckit_builtins.filters.dialect import MarkerList, builtin_markers, fold_words
from qckit_builtins.filters.quality import count_stop_words, french_stop_words, read_word_list, stop_word_set

#: French, English, and the languages short French is confused with (the candidates' default)
CANDIDATES = ("fr", "en", "es", "it", "pt", "ca", "ro", "de", "nl")
_FRENCH = "fr"
_ENGLISH = "en"
#: the least share of a document's words that its distinctive French words must make for the fast path
#: (on the bench corpus, French documents with three or more of them pass it but for 1 in 150)
_DISTINCTIVE_SHARE = 0.05
#: the metrics it sets (summed over the kept documents for :meth:`DialectLangId.summary`)
WORDS, ENGLISH_WORDS, RESCUED = "lang_words", "lang_english_words", "lang_rescued"


def _folded_words(name: str) -> frozenset[str]:
    """A built-in word list, ``qckit_builtins/data/<name>``, folded as :func:`fold_words` folds."""
    source = f"qckit_builtins/data/{name}"
    text = resources.files("qckit_builtins").joinpath(f"data/{name}").read_text(encoding="utf-8")
    words = set()
    for entry in read_word_list(text):
        folded = fold_words(entry)
        if len(folded) != 1:
            raise ValueError(f"{source}: {entry!r} is not one word")
        words.add(folded[0])
    return frozenset(words)


@functools.cache
def english_words() -> frozenset[str]:
    """The built-in list, ``qckit_builtins/data/english_words.txt``, folded as :func:`fold_words` folds."""
    return _folded_words("english_words.txt")


@functools.cache
def french_distinctive_words() -> frozenset[str]:
    """The built-in list, ``qckit_builtins/data/french_distinctive_words.txt`` (French words that are no
    word of the other candidates), folded as :func:`fold_words` folds."""
    return _folded_words("french_distinctive_words.txt")


@functools.cache
def _matcher() -> tuple[Any, bytes]:
    """The C matcher counting English and distinctive French words (one marker list of single folded
    words, its entries the words themselves), and the flags of the French ones by entry, in sorted order
    (the matcher's label ids)."""
    assert accelerated.markerscan is not None
    english, distinctive = english_words(), french_distinctive_words()
    words = sorted(english | distinctive)
    matcher = MarkerList("\n".join(words), "<words>").scan_matcher(accelerated.markerscan)
    return matcher, bytes(word in distinctive for word in words)


def word_counts(texts: list[str]) -> tuple[list[int], list[int], list[int]]:
    """For each text: its words (``len(fold_words(text))``), its English words and its distinctive
    French words (C with ``accelerated.markerscan``, else :func:`fold_words`, the reference)."""
    english, distinctive = english_words(), french_distinctive_words()
    if accelerated.markerscan is not None:
        matcher, flagged = _matcher()
        n_either, n_distinctive, n_words, slow = matcher.count_all(texts, flagged)
        n_english = [either - french for either, french in zip(n_either, n_distinctive, strict=True)]
    else:
        n = len(texts)
        n_english, n_words, n_distinctive, slow = [0] * n, [0] * n, [0] * n, range(n)
    for k in slow:  # texts the C matcher leaves to Python
        tokens = fold_words(texts[k])
        n_words[k] = len(tokens)
        n_english[k] = sum(1 for token in tokens if token in english)
        n_distinctive[k] = sum(1 for token in tokens if token in distinctive)
    return n_words, n_english, n_distinctive


@functools.cache
def _french_function_words() -> frozenset[str]:
    return stop_word_set(french_stop_words())


class DialectLangId:
    """Keeps Quebec French, short, colloquial and code-switched included (recipe: ``use = "dialect_langid"``).

    The decision and why it is made so are in the module's docstring
    (``qckit_builtins/filters/dialect_langid.py``). In short: keeps a document rich in distinctive French
    words without asking the model; drops a document as English only when English words are more than
    ``max_english_share`` of it; otherwise py3langid, restricted to ``candidates``, must give French at
    least ``short_confidence`` (documents of ``short_words`` words or fewer) to ``min_confidence``
    (``long_words`` words or more, linear in between); a document with French evidence (a Quebec marker,
    or French function words beside its English words) needs only ``rescue_confidence``.
    ``sample_chars``: measure and classify only the first N characters (0 = the whole text). Markers are
    the built-in list of the ``quebec_markers`` tagger. ``distinctive_words``: a document with this many
    distinctive French words (``data/french_distinctive_words.txt``), more than its English words and
    5 % of its words, is kept without the model (0 = every document goes to the model). ``lexicon``: a
    document the steps above drop is kept when its words (wordfreq's frequencies) and py3langid together
    give French at least ``lexicon_confidence`` and its words are all French ones (the module's step 5).

    Writes ``doc.meta["lang"]`` (the identified language), ``doc.meta["lang_score"]`` (its probability
    among the candidates; absent for a document kept on its distinctive words: the model was not asked),
    ``doc.meta["english_share"]`` and, for a document kept on evidence,
    ``doc.meta["lang_rescue"]`` (``"markers"``, ``"code_switching"`` or ``"lexicon"``: then ``lang_score``
    is the French probability of both models together). Reasons: ``lang:<code>`` (the
    identified language, e.g. ``lang:es``) and ``low_confidence``. Metrics ``lang_words``,
    ``lang_english_words`` and ``lang_rescued`` give the kept corpus's English-word share and rescued
    documents (:meth:`summary`).

    The model is read on first use in each process (memory-mapped from qckit's table cache) and never
    pickled.
    """

    name: ClassVar[str] = "dialect_langid"
    stateful: ClassVar[bool] = False

    def __init__(
        self,
        candidates: list[str] = list(CANDIDATES),  # noqa: B006 (copied, never mutated)
        min_confidence: float = 0.5,
        short_confidence: float = 0.3,
        short_words: int = 5,
        long_words: int = 15,
        rescue_confidence: float = 0.1,
        max_english_share: float = 0.5,
        sample_chars: int = 2000,
        distinctive_words: int = 3,
        lexicon: bool = True,
        lexicon_confidence: float = 0.9,
    ) -> None:
        self.candidates = langmodel.language_codes("candidates", candidates)
        if _FRENCH not in self.candidates or _ENGLISH not in self.candidates:
            raise ValueError("candidates must include fr and en")
        for key, value in (
            ("min_confidence", min_confidence),
            ("short_confidence", short_confidence),
            ("rescue_confidence", rescue_confidence),
            ("max_english_share", max_english_share),
            ("lexicon_confidence", lexicon_confidence),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1, not {value}")
        if not 0 <= short_words <= long_words:
            raise ValueError(f"need 0 <= short_words <= long_words, got {short_words} and {long_words}")
        if sample_chars < 0:
            raise ValueError(f"sample_chars must be at least 0, not {sample_chars}")
        if distinctive_words < 0:
            raise ValueError(f"distinctive_words must be at least 0, not {distinctive_words}")
        self.min_confidence = float(min_confidence)
        self.short_confidence = float(short_confidence)
        self.short_words = int(short_words)
        self.long_words = int(long_words)
        self.rescue_confidence = float(rescue_confidence)
        self.max_english_share = float(max_english_share)
        self.sample_chars = int(sample_chars)
        self.distinctive_words = int(distinctive_words)
        self.lexicon = bool(lexicon)
        self.lexicon_confidence = float(lexicon_confidence)

    def required_confidence(self, n_words: int) -> float:
        """The French probability a document of ``n_words`` words needs without evidence."""
        if n_words <= self.short_words:
            return self.short_confidence
        if n_words >= self.long_words:
            return self.min_confidence
        step = (n_words - self.short_words) / (self.long_words - self.short_words)
        return self.short_confidence + (self.min_confidence - self.short_confidence) * step

    def probabilities(self, text: str) -> dict[str, float]:
        """The candidates' normalized probabilities for ``text``."""
        candidates = langmodel.scorer(self.candidates)
        probs = candidates.probabilities(langmodel.features([text]))[0].tolist()
        return dict(zip(candidates.codes, probs, strict=True))

    def drop_reason(self, doc: Document) -> str | None:
        return self.drop_reason_batch([doc])[0]

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[drop_reason(d) for d in docs]``: the words of the whole batch are counted at once, and the
        model scores the documents their words leave in doubt at once (see
        :mod:`qckit_builtins.langmodel`); the few it drops as another candidate than English are scored
        again among all languages, from the same features, to name what they are."""
        texts = [doc.text for doc in docs]
        if self.sample_chars:
            texts = [text[: self.sample_chars] if len(text) > self.sample_chars else text for text in texts]
        n_words, n_english, n_distinctive = word_counts(texts)
        reasons: list[str | None] = [None] * len(docs)
        shares = [
            english / words if english else 0.0 for english, words in zip(n_english, n_words, strict=True)
        ]
        least = self.distinctive_words or float("inf")  # 0: the fast path off
        doubt = []  # the documents the model decides
        for k, (doc, share, words, english, distinctive) in enumerate(
            zip(docs, shares, n_words, n_english, n_distinctive, strict=True)
        ):
            doc.meta["english_share"] = round(share, 4) if english else 0.0
            metrics = doc.metrics
            metrics[WORDS] = float(words)
            metrics[ENGLISH_WORDS] = float(english)
            if (
                distinctive >= least
                and distinctive > english
                and distinctive >= _DISTINCTIVE_SHARE * words
                and share <= self.max_english_share
            ):
                doc.meta["lang"] = _FRENCH
                metrics[RESCUED] = 0.0
            else:
                doubt.append(k)
        if not doubt:
            return reasons
        candidates = langmodel.scorer(self.candidates)
        feats = langmodel.features([texts[k] for k in doubt])
        rows = candidates.probabilities(feats).tolist()
        french_column = candidates.codes.index(_FRENCH)
        english_column = candidates.codes.index(_ENGLISH)
        dropped: dict[int, tuple[str, float]] = {}  # position in doubt → (language, its probability)
        on_words: list[int] = []  # positions in doubt that the word step decides
        for i, (k, probs) in enumerate(zip(doubt, rows, strict=True)):
            if shares[k] > self.max_english_share:
                dropped[i] = (_ENGLISH, probs[english_column])
                continue
            kept = self._kept(texts[k], probs[french_column], n_english[k])
            if kept is not None:
                self._keep(docs[k], *kept)
            elif self.lexicon:
                on_words.append(i)
            else:
                dropped[i] = self._best(candidates.codes, probs)
        if on_words:  # the word step, for the batch's remaining documents at once
            votes = lexicon.lexicon(self.candidates).votes([texts[doubt[i]] for i in on_words])
            for i, vote in zip(on_words, votes, strict=True):
                probs = rows[i]
                french = self._french_on_words(vote, dict(zip(candidates.codes, probs, strict=True)))
                if french is not None:
                    self._keep(docs[doubt[i]], french, "lexicon")
                else:
                    dropped[i] = self._best(candidates.codes, probs)
        # a language outside the candidates, when the full model is sure of it (the same features)
        to_name = sorted(i for i, (lang, _) in dropped.items() if lang != _ENGLISH)
        if to_name:
            named = langmodel.scorer(None).classify(feats.take(to_name))
            for i, (other, score) in zip(to_name, named, strict=True):
                if other not in self.candidates and score >= self.min_confidence:
                    dropped[i] = (other, score)
        for i, (lang, score) in dropped.items():
            doc = docs[doubt[i]]
            doc.meta["lang"] = lang
            doc.meta["lang_score"] = round(score, 4)
            reasons[doubt[i]] = "low_confidence" if lang == _FRENCH else f"lang:{lang}"
        return reasons

    def _kept(self, text: str, french: float, n_english: int) -> tuple[float, str | None] | None:
        """(French probability, rescue or None) when the document stays, else None."""
        words = text.split()
        if french >= self.required_confidence(len(words)):
            return french, None
        markers = builtin_markers()
        if french >= self.rescue_confidence and markers.find(text)[0]:
            return french, "markers"
        if n_english:
            english = english_words()
            rest = " ".join(word for word in words if english.isdisjoint(fold_words(word)))
            if count_stop_words(rest, _french_function_words()) or markers.find(rest)[0]:
                rest_french = self.probabilities(rest)[_FRENCH]
                if rest_french >= self.rescue_confidence:
                    return rest_french, "code_switching"
        return None

    def _french_on_words(self, vote: lexicon.Vote, probs: dict[str, float]) -> float | None:
        """The French probability of both models when the words keep the document, else None."""
        markers = builtin_markers()
        if not vote.n_words or not all(
            word in markers.words or word.startswith(markers.stem_tuple) for word in vote.not_french
        ):
            return None
        # both models' evidence, independent given the language: the product, normalized
        joint = {code: p * vote.probabilities[code] for code, p in probs.items()}
        total = sum(joint.values())
        french = joint[_FRENCH] / total if total > 0 else 0.0
        return french if french >= self.lexicon_confidence else None

    @staticmethod
    def _best(codes: list[str], probs: list[float]) -> tuple[str, float]:
        best = max(range(len(probs)), key=probs.__getitem__)
        return codes[best], probs[best]

    def _keep(self, doc: Document, french: float, rescue: str | None) -> None:
        doc.meta["lang"] = _FRENCH
        doc.meta["lang_score"] = round(french, 4)
        doc.metrics[RESCUED] = 0.0 if rescue is None else 1.0
        if rescue is not None:
            doc.meta["lang_rescue"] = rescue

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """The kept corpus's share of English words, and how many documents French evidence kept."""
        words = sums.get(WORDS, 0.0)
        return {
            "english_word_share": sums.get(ENGLISH_WORDS, 0.0) / words if words else 0.0,
            "rescued_documents": sums.get(RESCUED, 0.0),
        }
