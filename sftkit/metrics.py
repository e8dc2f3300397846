"""Scores for before/after evaluation of a fine-tuned model, with uncertainty.

Fine-tuning a small model on a few thousand conversations moves metrics by amounts that
are easily swamped by noise on a 100-example eval set, so every per-example score here can
be fed to `bootstrap_ci` or `paired_bootstrap_diff` to say how sure we are. The module
covers three kinds of evidence:

- overlap with a reference answer: ROUGE-L and BLEU (via `rouge-score` and `sacrebleu`,
  the reference implementations, so numbers match what papers report; ROUGE through Hugging
  Face `evaluate` where the Hub is reachable, the same numbers) and exact match;
- behaviour of the generations themselves: diversity (distinct-n), degenerate looping
  (repeated n-grams), whether generation stopped on its own, and length;
- assistant-token perplexity: the loss the model assigns to the reference answers, on
  exactly the tokens that SFT trains (labels != -100), so it is comparable to training loss.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer

from .lm_head import labelled_logits
from .masking import IGNORE_INDEX

# The label value that Hugging Face losses (and our data collator) treat as "no loss here".


def _check_same_length(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: "
            f"{len(predictions)} predictions vs {len(references)} references"
        )


# --------------------------------------------------------------------------- overlap


#: Where ROUGE comes from: Hugging Face `evaluate`'s "rouge" metric (a script on the Hub, a thin
#: wrapper around rouge-score) where its users expect it, or rouge-score called directly.
ROUGE_BACKENDS = ("evaluate", "rouge-score")
# One RougeScorer configuration for both paths: ROUGE-L F-measure with the Porter stemmer
# ("cats"/"cat" match); rouge-score also lowercases and drops punctuation.
_ROUGE_TYPES = ["rougeL"]
_ROUGE_STEMMER = True


def rouge_backend() -> str:
    """"evaluate" when the Hub is reachable (and HF_HUB_OFFLINE is not set), else "rouge-score".

    `evaluate.load("rouge")` fetches the metric's script from the Hub, so offline (CI, laptops
    without the Hub) the same numbers come from rouge-score directly; the two agree
    (tests/test_metrics.py runs `evaluate` on a local metric script to show it).
    """
    from .models import hub_reachable

    return "evaluate" if hub_reachable() else "rouge-score"


def rouge_l_scores(predictions: list[str], references: list[str], backend: str | None = None,
                   metric: str = "rouge") -> tuple[list[float], str]:
    """Per-example ROUGE-L F-measure (0..1) and the backend that computed it.

    `backend`: "evaluate" (``evaluate.load(metric)``; `metric` may be a local folder holding
    a metric script), "rouge-score", or None to choose with `rouge_backend`.
    """
    _check_same_length(predictions, references)
    backend = backend or rouge_backend()
    if backend == "evaluate":
        import evaluate

        scorer = evaluate.load(metric)
        # use_aggregator=False: one score per example (for the bootstrap), as rouge-score gives.
        result = scorer.compute(predictions=predictions, references=references, rouge_types=_ROUGE_TYPES,
                                use_stemmer=_ROUGE_STEMMER, use_aggregator=False)
        return [float(x) for x in result["rougeL"]], backend
    if backend != "rouge-score":
        raise ValueError(f"unknown ROUGE backend {backend!r}; known: {ROUGE_BACKENDS}")
    scorer = rouge_scorer.RougeScorer(_ROUGE_TYPES, use_stemmer=_ROUGE_STEMMER)
    # rouge-score's signature is score(target, prediction): reference first.
    return [float(scorer.score(ref, pred)["rougeL"].fmeasure) for pred, ref in zip(predictions, references)], backend


def rouge_l(predictions: list[str], references: list[str], backend: str | None = None) -> list[float]:
    """Per-example ROUGE-L F-measure (0..1), longest-common-subsequence overlap.

    Per-example (not aggregated) so the caller can bootstrap it; the mean is the usual
    corpus figure for ROUGE-L F. See `rouge_l_scores` for the backend (`evaluate` where the
    Hub is reachable, rouge-score otherwise) and to learn which one computed the number.
    """
    return rouge_l_scores(predictions, references, backend)[0]


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0..100) with sacrebleu's defaults (13a tokenisation, one reference).

    Corpus BLEU pools n-gram counts over all examples before taking the geometric mean, so
    it is *not* the mean of `sentence_bleu`; report this one as the headline number.
    """
    _check_same_length(predictions, references)
    # sacrebleu takes a list of reference *streams*; we have one reference per example.
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def sentence_bleu(predictions: list[str], references: list[str]) -> list[float]:
    """Per-example smoothed BLEU (0..100), for bootstrapping; noisier than corpus BLEU."""
    _check_same_length(predictions, references)
    # sacrebleu.sentence_bleu applies exponential smoothing by default, so a missing
    # 4-gram match does not zero the whole score of a short answer.
    return [
        float(sacrebleu.sentence_bleu(pred, [ref]).score)
        for pred, ref in zip(predictions, references)
    ]


_WHITESPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Strip, collapse internal whitespace and drop one trailing period.

    Case is deliberately kept: some built-in tasks ask for an upper-case answer, and a
    model that ignores that instruction should not get credit.
    """
    text = _WHITESPACE.sub(" ", text.strip())
    # Only one period: "3." and "3" are the same answer, "3.." is sloppy output.
    if text.endswith("."):
        # Strip again so "42 ." normalises to "42", not "42 ".
        text = text[:-1].rstrip()
    return text


def exact_match(prediction: str, reference: str) -> bool:
    """True when the answers are equal after `normalize_answer` (case-sensitive)."""
    return normalize_answer(prediction) == normalize_answer(reference)


# ------------------------------------------------------------------------- behaviour


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be a positive n-gram order, got {n}")


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over all texts (whitespace tokens); 0.0 if none.

    N-grams are taken within each text (never across the boundary between two texts) and
    pooled, so this measures diversity across the whole set: a model that gives the same
    answer to every prompt scores low even if each answer is varied inside.
    """
    _check_n(n)
    all_ngrams: list[tuple[str, ...]] = []
    for text in texts:
        all_ngrams.extend(_ngrams(text.split(), n))
    if not all_ngrams:
        return 0.0
    return len(set(all_ngrams)) / len(all_ngrams)


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Fraction of a text's n-grams that repeat an earlier one: (total - unique) / total.

    The classic symptom of a base model that never learned to stop is a loop ("I am happy
    to help. I am happy to help. ..."), which drives this towards 1. 0.0 when the text has
    fewer than n tokens.
    """
    _check_n(n)
    grams = _ngrams(text.split(), n)
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


# A role line a base model writes when it continues a chat transcript as a document:
# "User:", "### Assistant:", "Human:", "<|user|>" or a bare role name alone on a line, at the
# start of a line. The start-of-turn token itself is checked separately (`invents_turn`).
_ROLE_LINE = re.compile(
    r"(?im)^[ \t#>*]*(?:<\|?)?(?:user|assistant|human|system|model|bot)(?:\|?>)?"
    r"[ \t]*(?::|\n|$)"
)


def invents_turn(raw_text: str, start_token: str) -> bool:
    """Did a reply write a new turn itself: the start-of-turn token, or a role line?

    `raw_text` is the reply decoded with special tokens kept. A base model continues a
    conversation as a transcript: it closes nothing and writes the user's next message
    ("User: Thanks! ...") or opens a turn with the template's own token.
    """
    return start_token in raw_text or _ROLE_LINE.search(raw_text) is not None


def echoes_prompt(reply: str, prompt: str, min_chars: int = 20) -> bool:
    """Does the reply repeat the user's message verbatim (a base model re-writing the user turn)?

    Without role markers, a base model that continues a chat as a document often writes the
    user's message again and again; `invents_turn` cannot see that, this can. Messages
    shorter than `min_chars` are too generic to count.
    """
    prompt = prompt.strip()
    return len(prompt) >= min_chars and prompt in reply


def stop_rate(stopped: list[bool]) -> float:
    """Fraction of generations that ended on their own (EOS) rather than at the token cap."""
    if len(stopped) == 0:
        raise ValueError("stop_rate needs at least one generation, got an empty list")
    return sum(bool(s) for s in stopped) / len(stopped)


def response_lengths(texts: list[str]) -> list[int]:
    """Whitespace word count of each text (model-independent, unlike token counts)."""
    return [len(text.split()) for text in texts]


# ------------------------------------------------------------------------ perplexity


def assistant_perplexity(
    model: Any, rows: list[dict], pad_token_id: int, batch_size: int = 8
) -> dict:
    """Token-weighted NLL and perplexity of the assistant tokens (labels != -100).

    Returns ``{"nll", "ppl", "tokens", "row_nll"}``: `nll` is the mean over all loss tokens
    of all rows (long answers weigh more, as in training loss); `row_nll` is each row's own
    mean, in input order, for bootstrapping. Labels follow the Hugging Face convention:
    aligned with `input_ids`, and the model shifts them (position t predicts label t+1),
    so a row's first label is never scored.

    Raises ValueError on a row whose input_ids and labels differ in length, or that has no
    scored token: such a row has no defined mean NLL, and silently dropping it would
    misalign `row_nll` with the caller's examples (the data pipeline drops these rows).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(rows) == 0:
        raise ValueError("assistant_perplexity needs at least one row, got none")
    for i, row in enumerate(rows):
        if len(row["input_ids"]) != len(row["labels"]):
            raise ValueError(
                f"row {i}: input_ids has {len(row['input_ids'])} tokens but labels has "
                f"{len(row['labels'])}"
            )
        if not any(label != IGNORE_INDEX for label in row["labels"][1:]):
            raise ValueError(
                f"row {i} has no loss token after the shift (all labels[1:] are "
                f"{IGNORE_INDEX}); drop it before scoring"
            )

    device = next(model.parameters()).device
    was_training = model.training
    # Eval mode switches off dropout (LoRA dropout included), which would make the loss
    # random; the previous mode is restored so this can be called mid-training.
    model.eval()
    row_nll: list[float] = []
    total_nll = 0.0
    total_tokens = 0
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                width = max(len(row["input_ids"]) for row in batch)
                # Right padding: with a causal mask, real tokens never attend to padding
                # that comes after them, and position ids stay 0..len-1 as unpadded.
                input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for j, row in enumerate(batch):
                    length = len(row["input_ids"])
                    input_ids[j, :length] = torch.tensor(row["input_ids"], dtype=torch.long)
                    labels[j, :length] = torch.tensor(row["labels"], dtype=torch.long)
                    attention_mask[j, :length] = 1
                input_ids = input_ids.to(device)
                labels = labels.to(device)
                attention_mask = attention_mask.to(device)

                # Logits only at the scored positions (`sftkit.lm_head`): the same numbers as
                # the full forward, without a (batch x length x vocabulary) tensor.
                logits, targets, row = labelled_logits(model, input_ids, attention_mask, labels)
                # Upcast: fp16/bf16 log-softmax over a large vocabulary loses precision.
                token_nll = F.cross_entropy(logits.float(), targets, reduction="none")
                sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, row.cpu(), token_nll.double().cpu())
                counts = torch.bincount(row.cpu(), minlength=len(batch))
                for s, c in zip(sums.tolist(), counts.tolist()):
                    row_nll.append(s / c)
                    total_nll += s
                    total_tokens += int(c)
    finally:
        model.train(was_training)

    mean_nll = total_nll / total_tokens
    return {
        "nll": mean_nll,
        "ppl": math.exp(mean_nll),
        "tokens": total_tokens,
        "row_nll": row_nll,
    }


# ------------------------------------------------------------------------- bootstrap


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _as_finite_array(values: list[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {len(values)} values")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` resamples with replacement (one index matrix, vectorised).

    Memory is n_resamples x len(values) indices: 8 MB for 1000 x 1000, fine for eval sets.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    return values[idx].mean(axis=1)


def bootstrap_ci(
    values: list[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Percentile-bootstrap confidence interval of the mean: ``{"mean", "low", "high"}``.

    Percentile bootstrap makes no normality assumption, which matters for bounded,
    skewed per-example scores such as exact match (0/1) or ROUGE on short answers.
    """
    _check_bootstrap_args(n_resamples, confidence)
    array = _as_finite_array(values, "values")
    mean = float(array.mean())
    # With no spread there is nothing to resample; return the exact collapsed interval
    # rather than one that differs from the mean by float rounding in the resample means.
    if np.all(array == array[0]):
        return {"mean": mean, "low": mean, "high": mean}
    means = _bootstrap_means(array, n_resamples, seed)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": mean, "low": float(low), "high": float(high)}


def paired_bootstrap_diff(
    before: list[float],
    after: list[float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of mean(after) - mean(before) over the same examples.

    Returns ``{"before", "after", "diff", "low", "high", "p_not_better"}``. Both lists must
    score the same examples in the same order; each resample draws one set of example
    indices for both, so per-example difficulty cancels and the interval is far tighter
    than comparing two independent intervals. `p_not_better` is the fraction of resamples
    with diff <= 0, a one-sided bootstrap p-value for "after is higher". For metrics where
    lower is better (NLL, repetition) pass negated values.
    """
    if len(before) != len(after):
        raise ValueError(
            f"paired bootstrap needs one score per example in both lists: "
            f"before has {len(before)}, after has {len(after)}"
        )
    _check_bootstrap_args(n_resamples, confidence)
    b = _as_finite_array(before, "before")
    a = _as_finite_array(after, "after")
    # Resampling the per-example differences with one index set is exactly resampling
    # the same indices in both lists and subtracting the means.
    diffs = a - b
    diff = float(a.mean() - b.mean())
    if np.all(diffs == diffs[0]):
        low = high = diff
        p_not_better = 1.0 if diff <= 0 else 0.0
    else:
        means = _bootstrap_means(diffs, n_resamples, seed)
        alpha = 1.0 - confidence
        low, high = (float(q) for q in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
        p_not_better = float(np.mean(means <= 0))
    return {
        "before": float(b.mean()),
        "after": float(a.mean()),
        "diff": diff,
        "low": low,
        "high": high,
        "p_not_better": p_not_better,
    }
