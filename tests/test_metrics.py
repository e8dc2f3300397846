"""Tests for sftkit.metrics: every expected value is worked out here independently
(by hand, by a separate LCS, or by running the model one unpadded row at a time)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sftkit import metrics
from sftkit.masking import IGNORE_INDEX

# ------------------------------------------------------------------------- ROUGE-L


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Textbook dynamic-programming LCS, independent of rouge-score's implementation."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def _lcs_f(pred: str, ref: str) -> float:
    p, r = pred.split(), ref.split()
    lcs = _lcs_length(p, r)
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall) if lcs else 0.0


def test_rouge_l_matches_hand_lcs():
    # Lower-case words of <= 3 letters, so rouge-score's lowercasing and Porter stemming
    # (only applied to tokens longer than 3 characters) change nothing.
    preds = ["the cat sat on the mat", "the cat sat", "a dog ran"]
    refs = ["the cat lay on the mat", "the cat sat on the mat", "the cat sat"]
    # By hand: LCS 5 of 6/6 -> 5/6; LCS 3, P=1, R=1/2 -> 2/3; no overlap -> 0.
    hand = [5 / 6, 2 / 3, 0.0]
    assert [_lcs_f(p, r) for p, r in zip(preds, refs)] == pytest.approx(hand)
    assert metrics.rouge_l(preds, refs) == pytest.approx(hand, abs=1e-12)


def test_rouge_l_stems_and_ignores_case():
    # "Cats" vs "cat": lowercased and stemmed to the same token, so a perfect match.
    assert metrics.rouge_l(["Cats sleep"], ["cat sleeps"]) == pytest.approx([1.0])


def test_rouge_l_passes_the_backend_on():
    # `rouge_l` is `rouge_l_scores` without the backend name: an explicit backend must reach it
    # (an unknown one is refused, with the known ones listed), not be replaced by the default.
    with pytest.raises(ValueError, match=r"^unknown ROUGE backend 'nltk'; known: \('evaluate', 'rouge-score'\)$"):
        metrics.rouge_l(["a"], ["a"], backend="nltk")


def test_rouge_l_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions vs 1 references"):
        metrics.rouge_l(["a", "b"], ["a"])


ROUGE_METRIC_FOLDER = str(Path(__file__).parent / "fixtures" / "rouge_metric")
ROUGE_PREDS = ["The cats sat on the mat.", "hello world", "Running quickly, the dogs barked", "", "a b c"]
ROUGE_REFS = ["a cat lay on the mats", "goodbye world", "the dog runs and barks quickly", "x", "a b c"]


def test_rouge_backends_agree_through_evaluate_load():
    # `evaluate.load` on a local metric script with the Hub "rouge" script's interface
    # (tests/fixtures/rouge_metric): the evaluate machinery runs offline, and the evaluate
    # backend's arguments (rouge_types, use_stemmer, per-example output, reference/prediction
    # order) must reproduce the rouge-score backend exactly.
    direct, direct_backend = metrics.rouge_l_scores(ROUGE_PREDS, ROUGE_REFS, backend="rouge-score")
    via, via_backend = metrics.rouge_l_scores(ROUGE_PREDS, ROUGE_REFS, backend="evaluate", metric=ROUGE_METRIC_FOLDER)
    assert (direct_backend, via_backend) == ("rouge-score", "evaluate")
    assert via == pytest.approx(direct, abs=1e-12)
    # Not a trivially equal pair: partial overlaps, a stemmed match and an empty prediction.
    assert 0.0 < direct[0] < 1.0 and direct[3] == 0.0 and direct[4] == 1.0


def test_the_default_evaluate_call_loads_rouge_by_name(tmp_path, monkeypatch):
    # The evaluate backend's own call, `evaluate.load("rouge")` (the default `metric`), which on
    # Colab fetches the Hub's script. `evaluate.load` looks for a local ./rouge/rouge.py before the
    # Hub, so a folder of that name in the working directory (the stand-in script above) runs the
    # same call here, offline; the Hub's script itself is not run by any test.
    (tmp_path / "rouge").mkdir()
    (tmp_path / "rouge" / "rouge.py").write_text((Path(ROUGE_METRIC_FOLDER) / "rouge_metric.py").read_text())
    monkeypatch.chdir(tmp_path)
    direct, _ = metrics.rouge_l_scores(ROUGE_PREDS, ROUGE_REFS, backend="rouge-score")
    via, backend = metrics.rouge_l_scores(ROUGE_PREDS, ROUGE_REFS, backend="evaluate")
    assert backend == "evaluate" and via == pytest.approx(direct, abs=1e-12)


def test_rouge_backend_is_chosen_by_hub_reachability(monkeypatch):
    import sftkit.models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert metrics.rouge_backend() == "rouge-score"
    assert metrics.rouge_l_scores(["a b"], ["a b"])[1] == "rouge-score"
    monkeypatch.setattr(sftkit.models, "hub_reachable", lambda timeout=3.0: True)
    assert metrics.rouge_backend() == "evaluate"
    with pytest.raises(ValueError, match="unknown ROUGE backend 'nltk'"):
        metrics.rouge_l_scores(["a"], ["a"], backend="nltk")


# ---------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_100():
    sents = ["the cat sat on the mat", "a quick brown fox jumps over the dog"]
    assert metrics.bleu(sents, sents) == pytest.approx(100.0)
    assert metrics.sentence_bleu(sents, sents) == pytest.approx([100.0, 100.0])


def test_bleu_hand_computed_corpus_pools_counts():
    preds = ["the cat sat on the mat", "the cat sat on a mat"]
    refs = ["the cat sat on the mat today", "the cat sat on the mat"]
    # Sentence 1: all n-grams match (6/6, 5/5, 4/4, 3/3), hyp 6 vs ref 7 tokens.
    # Sentence 2: clipped matches 5/6, 3/5, 2/4, 1/3, equal lengths.
    # Corpus BLEU pools the counts: 11/12, 8/10, 6/8, 4/6, hyp 12 vs ref 13 -> BP < 1.
    precisions = [11 / 12, 8 / 10, 6 / 8, 4 / 6]
    brevity = math.exp(1 - 13 / 12)
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert metrics.bleu(preds, refs) == pytest.approx(expected, rel=1e-9)

    # Per sentence (no zero counts, so smoothing plays no part).
    s1 = 100 * math.exp(1 - 7 / 6)
    s2 = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    per = metrics.sentence_bleu(preds, refs)
    assert per == pytest.approx([s1, s2], rel=1e-9)
    # Corpus BLEU is not the mean of sentence BLEU.
    assert metrics.bleu(preds, refs) != pytest.approx(sum(per) / 2, rel=1e-3)


def test_bleu_length_mismatch():
    with pytest.raises(ValueError, match="1 predictions vs 2 references"):
        metrics.bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="1 predictions vs 2 references"):
        metrics.sentence_bleu(["a"], ["a", "b"])


# --------------------------------------------------------------------- exact match


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Paris  ", "Paris"),
        ("Paris.", "Paris"),
        ("Paris..", "Paris."),  # only one trailing period goes
        ("New   York\n City", "New York City"),
        ("42 .", "42"),
        ("HELLO", "HELLO"),  # case is kept
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert metrics.normalize_answer(text) == expected


def test_exact_match():
    assert metrics.exact_match(" Paris. ", "Paris")
    assert metrics.exact_match("New  York", "New York.")
    assert not metrics.exact_match("paris", "Paris")  # case matters
    assert not metrics.exact_match("HELLO", "hello")
    assert not metrics.exact_match("Paris..", "Paris")
    assert not metrics.exact_match("Paris France", "Paris")


# ----------------------------------------------------------- diversity and looping


def test_distinct_n_hand_counted():
    texts = ["a b a b", "a b c"]
    # Unigrams: a b a b a b c -> 3 unique of 7.
    assert metrics.distinct_n(texts, 1) == pytest.approx(3 / 7)
    # Bigrams within each text: (ab, ba, ab) + (ab, bc) -> {ab, ba, bc} = 3 of 5.
    assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 5)
    # All-distinct text.
    assert metrics.distinct_n(["x y z"], 2) == pytest.approx(1.0)


def test_distinct_n_no_ngrams_and_no_cross_boundary():
    assert metrics.distinct_n([], 1) == 0.0
    assert metrics.distinct_n(["", "  "], 1) == 0.0
    # "a" and "b" are separate texts: no bigram spans them.
    assert metrics.distinct_n(["a", "b"], 2) == 0.0
    with pytest.raises(ValueError, match="positive"):
        metrics.distinct_n(["a"], 0)


def test_repeated_ngram_rate_hand_counted():
    # Trigrams: abc bca cab abc bca cab -> 6 total, 3 unique -> 3/6.
    assert metrics.repeated_ngram_rate("a b c a b c a b", n=3) == pytest.approx(0.5)
    # Default n=4: "a a a a a" has 2 four-grams, both "a a a a" -> 1 repeat of 2.
    assert metrics.repeated_ngram_rate("a a a a a") == pytest.approx(0.5)
    # A long loop approaches 1: 20 copies of a 4-word phrase = 77 four-grams, 4 unique.
    loop = " ".join(["I am happy here"] * 20)
    assert metrics.repeated_ngram_rate(loop) == pytest.approx(73 / 77)
    assert metrics.repeated_ngram_rate("one two three four five") == 0.0
    assert metrics.repeated_ngram_rate("too short", n=4) == 0.0
    assert metrics.repeated_ngram_rate("", n=1) == 0.0


def test_stop_rate_and_lengths():
    assert metrics.stop_rate([True, False, True, True]) == pytest.approx(0.75)
    assert metrics.stop_rate([False]) == 0.0
    with pytest.raises(ValueError, match="^stop_rate needs at least one generation, got an empty list$"):
        metrics.stop_rate([])
    assert metrics.response_lengths(["one two  three", "", " solo\n", "a\tb"]) == [3, 0, 1, 2]


# ---------------------------------------------------------------------- perplexity


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _rows() -> list[dict]:
    """Rows of different lengths with a masked "prompt" and a scored "answer"."""
    gen = torch.Generator().manual_seed(1)
    rows = []
    for length, n_prompt in [(7, 3), (12, 5), (4, 1), (9, 2), (5, 4)]:
        ids = torch.randint(1, 50, (length,), generator=gen).tolist()
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        rows.append({"input_ids": ids, "labels": labels})
    # A masked hole in the middle of an answer (as a multi-turn row would have).
    rows[1]["labels"][8] = IGNORE_INDEX
    return rows


def _reference_nll(model, rows: list[dict]) -> tuple[list[float], list[int]]:
    """Per-row summed NLL and token count, one unpadded row at a time, no batching."""
    model.eval()
    sums, counts = [], []
    with torch.no_grad():
        for row in rows:
            logits = model(torch.tensor([row["input_ids"]])).logits[0]
            # Position t predicts token t+1; keep only targets whose label is not -100.
            positions = [t for t in range(len(row["labels"]) - 1) if row["labels"][t + 1] != IGNORE_INDEX]
            targets = torch.tensor([row["labels"][t + 1] for t in positions])
            nll = F.cross_entropy(logits[positions], targets, reduction="sum")
            sums.append(float(nll))
            counts.append(len(positions))
    return sums, counts


def test_perplexity_matches_unpadded_reference(tiny_model):
    rows = _rows()
    sums, counts = _reference_nll(tiny_model, rows)
    expected_nll = sum(sums) / sum(counts)  # token-weighted

    # batch_size=2 mixes lengths 7/12 and 4/9 (padding) and leaves a last batch of one.
    result = metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0, batch_size=2)
    assert result["tokens"] == sum(counts) == 4 + 6 + 3 + 7 + 1
    assert result["nll"] == pytest.approx(expected_nll, abs=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(expected_nll), rel=1e-5)
    assert result["row_nll"] == pytest.approx([s / c for s, c in zip(sums, counts)], abs=1e-5)
    # Token weighting differs from row weighting here (rows have 1..7 tokens).
    assert abs(expected_nll - float(np.mean(result["row_nll"]))) > 1e-4

    # Same answer whatever the batching or the pad id (padding must not leak in).
    other = metrics.assistant_perplexity(tiny_model, rows, pad_token_id=7, batch_size=5)
    assert other["nll"] == pytest.approx(expected_nll, abs=1e-5)
    assert other["row_nll"] == pytest.approx(result["row_nll"], abs=1e-5)


def test_perplexity_excludes_masked_positions(tiny_model):
    rows = _rows()
    base = metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0)

    # The first label can never be scored (nothing predicts it): changing it is a no-op,
    # as is un-masking it.
    first_changed = [dict(r, labels=list(r["labels"])) for r in rows]
    first_changed[0]["labels"][0] = 17
    same = metrics.assistant_perplexity(tiny_model, first_changed, pad_token_id=0)
    assert same["nll"] == pytest.approx(base["nll"], abs=1e-7)
    assert same["tokens"] == base["tokens"]

    # Masking one more position drops exactly that token's loss (checked by reference).
    masked = [dict(r, labels=list(r["labels"])) for r in rows]
    masked[3]["labels"][5] = IGNORE_INDEX
    sums, counts = _reference_nll(tiny_model, masked)
    less = metrics.assistant_perplexity(tiny_model, masked, pad_token_id=0)
    assert less["tokens"] == base["tokens"] - 1
    assert less["nll"] == pytest.approx(sum(sums) / sum(counts), abs=1e-5)
    assert less["nll"] != pytest.approx(base["nll"], abs=1e-5)

    # Changing the value of a scored label changes the result.
    changed = [dict(r, labels=list(r["labels"])) for r in rows]
    changed[3]["labels"][5] = (changed[3]["labels"][5] % 49) + 1
    moved = metrics.assistant_perplexity(tiny_model, changed, pad_token_id=0)
    assert moved["tokens"] == base["tokens"]
    assert moved["row_nll"][3] != pytest.approx(base["row_nll"][3], abs=1e-5)
    assert moved["row_nll"][:3] == pytest.approx(base["row_nll"][:3], abs=1e-7)


def test_perplexity_restores_mode_and_validates(tiny_model):
    rows = _rows()
    tiny_model.train()
    metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0)
    assert tiny_model.training, "training mode should be restored"
    tiny_model.eval()
    metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0)
    assert not tiny_model.training, "eval mode should be kept"

    with pytest.raises(ValueError, match="row 0 has no loss token"):
        metrics.assistant_perplexity(
            tiny_model, [{"input_ids": [1, 2, 3], "labels": [5, IGNORE_INDEX, IGNORE_INDEX]}], pad_token_id=0
        )
    with pytest.raises(ValueError, match="3 tokens but labels has 2"):
        metrics.assistant_perplexity(
            tiny_model, [{"input_ids": [1, 2, 3], "labels": [1, 2]}], pad_token_id=0
        )


def test_perplexity_validates_batch_size_and_rows(tiny_model):
    rows = _rows()
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0, batch_size=0)
    with pytest.raises(ValueError, match="^assistant_perplexity needs at least one row, got none$"):
        metrics.assistant_perplexity(tiny_model, [], pad_token_id=0)
    # batch_size=1 is the smallest valid size (every row on its own), with the same numbers.
    sums, counts = _reference_nll(tiny_model, rows)
    one = metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0, batch_size=1)
    assert one["row_nll"] == pytest.approx([s / c for s, c in zip(sums, counts)], abs=1e-5)


def test_perplexity_scores_a_row_whose_only_loss_token_is_the_second(tiny_model):
    # labels[1] is the first label that can be scored (position 0 predicts it): a row with only
    # that one is valid, and its NLL is that single token's cross-entropy.
    rows = [{"input_ids": [3, 4, 5], "labels": [IGNORE_INDEX, 4, IGNORE_INDEX]}]
    sums, counts = _reference_nll(tiny_model, rows)
    assert counts == [1]
    result = metrics.assistant_perplexity(tiny_model, rows, pad_token_id=0)
    assert result["tokens"] == 1
    assert result["row_nll"] == pytest.approx(sums, abs=1e-5)


class _OneParameter(torch.nn.Module):
    """A stand-in model: `assistant_perplexity` only reads its device and its training mode."""

    def __init__(self, device: str = "cpu"):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, device=device))


def test_perplexity_pads_batches_of_eight_on_the_right(monkeypatch):
    # What reaches the model, recorded by a stand-in for `labelled_logits`: ten rows go in the
    # default batches of 8 and 2; each batch is right-padded to its longest row with the pad id
    # (input_ids), -100 (labels) and 0 (attention mask), all int64 as Hugging Face models expect.
    # Uniform logits over 4 classes make every token's NLL log(4).
    calls = []

    def fake_labelled_logits(model, input_ids, attention_mask, labels):
        calls.append((input_ids, attention_mask, labels))
        keep = labels[:, 1:] != IGNORE_INDEX
        rows = torch.arange(labels.shape[0]).unsqueeze(1).expand_as(keep)[keep]
        return torch.zeros(int(keep.sum()), 4), labels[:, 1:][keep] % 4, rows

    monkeypatch.setattr(metrics, "labelled_logits", fake_labelled_logits)
    rows = [{"input_ids": [i + 1] * (2 + i % 3), "labels": [IGNORE_INDEX] + [i + 1] * (1 + i % 3)}
            for i in range(10)]
    result = metrics.assistant_perplexity(_OneParameter(), rows, pad_token_id=7)
    assert [ids.shape for ids, _, _ in calls] == [(8, 4), (2, 4)]
    ids, mask, labels = calls[1]  # rows 8 and 9: lengths 4 and 2
    assert ids.dtype == mask.dtype == labels.dtype == torch.long
    assert ids.tolist() == [[9, 9, 9, 9], [10, 10, 7, 7]]
    assert labels.tolist() == [[IGNORE_INDEX, 9, 9, 9], [IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert calls[0][1].dtype == torch.long and calls[0][1].sum() == sum(len(r["input_ids"]) for r in rows[:8])
    assert result["tokens"] == sum(1 + i % 3 for i in range(10))
    assert result["nll"] == pytest.approx(math.log(4)) and result["ppl"] == pytest.approx(4.0)
    assert result["row_nll"] == pytest.approx([math.log(4)] * 10)


def test_perplexity_moves_the_batch_to_the_models_device(monkeypatch):
    # A model whose parameter lives on the "meta" device (no accelerator needed): input_ids,
    # attention mask and labels must all be sent there before the forward.
    devices = []

    def fake_labelled_logits(model, input_ids, attention_mask, labels):
        devices.append((input_ids.device.type, attention_mask.device.type, labels.device.type))
        return torch.zeros(2, 4), torch.tensor([1, 2]), torch.tensor([0, 0])

    monkeypatch.setattr(metrics, "labelled_logits", fake_labelled_logits)
    rows = [{"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]}]
    result = metrics.assistant_perplexity(_OneParameter("meta"), rows, pad_token_id=0)
    assert devices == [("meta", "meta", "meta")]
    assert result["tokens"] == 2 and result["nll"] == pytest.approx(math.log(4))


def test_perplexity_sums_token_losses_in_float64(monkeypatch):
    # Per-token NLLs come out of the model in float32, but a long evaluation sums a great many of
    # them: the sums are float64. Here one token's NLL is 600 (exact in float32, spacing 6e-5 there)
    # and the other's about 6e-6; in float32 the sum would round back to 600.
    logits, targets = torch.tensor([[0.0, -600.0], [0.0, -12.0]]), torch.tensor([1, 0])

    def fake_labelled_logits(model, input_ids, attention_mask, labels):
        return logits, targets, torch.tensor([0, 0])

    monkeypatch.setattr(metrics, "labelled_logits", fake_labelled_logits)
    rows = [{"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]}]
    result = metrics.assistant_perplexity(_OneParameter(), rows, pad_token_id=0)
    token_nll = F.cross_entropy(logits, targets, reduction="none")
    assert token_nll.sum().item() == 600.0, "the float32 sum loses the small token"
    expected = token_nll.double().sum().item() / 2
    assert result["tokens"] == 2
    assert result["row_nll"] == [pytest.approx(expected, rel=1e-12)]
    assert result["nll"] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_matches_normal_theory():
    values = np.random.default_rng(42).normal(3.0, 2.0, size=400).tolist()
    ci = metrics.bootstrap_ci(values, n_resamples=2000)
    assert ci["mean"] == pytest.approx(float(np.mean(values)))
    assert ci["low"] < ci["mean"] < ci["high"]
    # For a mean of normal data the 95% interval is about +-1.96 * sd / sqrt(n). The tolerance
    # is tight enough that a 92% interval (1.751 / 1.96 = 0.89 of the width) or a 90% one
    # (0.84) labelled 95% fails; this seed's bootstrap width is within 2% of the formula.
    expected_width = 2 * 1.96 * np.std(values, ddof=1) / np.sqrt(len(values))
    assert ci["high"] - ci["low"] == pytest.approx(expected_width, rel=0.06)
    # Centred on the mean (a shifted pair of quantiles would not be).
    assert (ci["low"] + ci["high"]) / 2 == pytest.approx(ci["mean"], abs=0.1 * expected_width)
    # Each side on its own is 1.96 sd / sqrt(n) (this seed: within 1.5%): a lower quantile at
    # alpha/3 instead of alpha/2 (z = 2.13, +9%) or at 2 * alpha (z = 1.64, -16%) fails here.
    assert ci["mean"] - ci["low"] == pytest.approx(expected_width / 2, rel=0.05)
    assert ci["high"] - ci["mean"] == pytest.approx(expected_width / 2, rel=0.05)


def test_bootstrap_ci_shrinks_with_more_data_and_confidence():
    rng = np.random.default_rng(3)
    small = metrics.bootstrap_ci(rng.normal(size=25).tolist())
    large = metrics.bootstrap_ci(rng.normal(size=2500).tolist())
    # Width scales like 1/sqrt(n): 100x the data -> ~10x narrower.
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 5
    values = rng.normal(size=100).tolist()
    wide = metrics.bootstrap_ci(values, confidence=0.99)
    narrow = metrics.bootstrap_ci(values, confidence=0.5)
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


def test_bootstrap_ci_deterministic_by_seed():
    values = np.random.default_rng(5).uniform(size=50).tolist()
    assert metrics.bootstrap_ci(values, seed=1) == metrics.bootstrap_ci(values, seed=1)
    assert metrics.bootstrap_ci(values, seed=1) != metrics.bootstrap_ci(values, seed=2)


def test_bootstrap_ci_degenerate_inputs():
    assert metrics.bootstrap_ci([0.7]) == {"mean": 0.7, "low": 0.7, "high": 0.7}
    # All-equal values: no spread, so the interval is the mean itself (exactly).
    equal = metrics.bootstrap_ci([0.1] * 7)
    assert equal["low"] == equal["high"] == equal["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        metrics.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_paired_bootstrap_detects_clear_improvement():
    rng = np.random.default_rng(7)
    before = rng.uniform(0, 1, size=60)
    after = before + 0.2 + rng.normal(0, 0.05, size=60)
    result = metrics.paired_bootstrap_diff(before.tolist(), after.tolist())
    assert result["before"] == pytest.approx(before.mean())
    assert result["after"] == pytest.approx(after.mean())
    assert result["diff"] == pytest.approx(after.mean() - before.mean())
    assert 0 < result["low"] < result["diff"] < result["high"]
    assert result["p_not_better"] < 0.01


def test_paired_bootstrap_interval_has_the_normal_theory_width():
    # 2,000 pairs with a large spread between examples and a small one within each pair: the mean
    # paired difference is close to normal, so the 95% interval is diff +- 1.96 * sd(d) / sqrt(n)
    # with d = after - before (an unpaired interval would be ~14x wider). A 92% interval
    # (0.89 of that half-width) or a 90% one (0.84) labelled 95% fails the 5% tolerance.
    rng = np.random.default_rng(0)
    n = 2000
    before = rng.normal(0, 10, size=n)
    after = before + 0.3 + rng.normal(0, 1, size=n)
    sd_mean = np.std(after - before, ddof=1) / np.sqrt(n)
    for confidence, z in ((0.95, 1.959964), (0.9, 1.644854)):
        result = metrics.paired_bootstrap_diff(before.tolist(), after.tolist(), n_resamples=4000,
                                               confidence=confidence)
        assert (result["high"] - result["low"]) / 2 == pytest.approx(z * sd_mean, rel=0.05), confidence
        # each side on its own: a shifted or one-sided interval fails here
        assert result["diff"] - result["low"] == pytest.approx(z * sd_mean, rel=0.08), confidence
        assert result["high"] - result["diff"] == pytest.approx(z * sd_mean, rel=0.08), confidence


def test_paired_bootstrap_uses_pairing():
    # Huge spread between examples, small consistent gain on each: only a paired
    # analysis sees it. The two separate (unpaired) intervals overlap heavily.
    rng = np.random.default_rng(11)
    before = rng.normal(0, 10, size=40)
    after = before + 0.5 + rng.normal(0, 0.1, size=40)
    ci_before = metrics.bootstrap_ci(before.tolist())
    ci_after = metrics.bootstrap_ci(after.tolist())
    assert ci_after["low"] < ci_before["high"], "unpaired intervals should overlap"
    paired = metrics.paired_bootstrap_diff(before.tolist(), after.tolist())
    assert paired["low"] > 0.4 and paired["high"] < 0.6
    assert paired["p_not_better"] == 0.0


def test_paired_bootstrap_no_change_and_worse():
    values = [0.1, 0.5, 0.9, 0.3]
    same = metrics.paired_bootstrap_diff(values, values)
    assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    assert same["p_not_better"] == 1.0
    worse = metrics.paired_bootstrap_diff([1.0, 0.9, 0.8, 1.0, 0.7], [0.0, 0.2, 0.1, 0.0, 0.1])
    assert worse["high"] < 0 and worse["p_not_better"] == 1.0
    again = metrics.paired_bootstrap_diff([1.0, 0.9, 0.8, 1.0, 0.7], [0.0, 0.2, 0.1, 0.0, 0.1])
    assert again == worse  # deterministic with the default seed


def test_bootstrap_of_two_points_reaches_both_extremes():
    # Resamples of [1, 0] (two draws with replacement) have mean 0, 0.5 or 1 with probability
    # 1/4, 1/2, 1/4: among 1000 resamples about 250 are 0 and 250 are 1, so the 2.5% and 97.5%
    # quantiles are exactly 0 and 1. A resampler that never drew the first example would give 0, 0.
    assert metrics.bootstrap_ci([1.0, 0.0]) == {"mean": 0.5, "low": 0.0, "high": 1.0}
    # Paired: differences [1, -1] resample to -1, 0, 1 (1/4, 1/2, 1/4), so "diff <= 0" (not
    # better) has probability 3/4, and the interval is [-1, 1].
    result = metrics.paired_bootstrap_diff([0.0, 1.0], [1.0, 0.0])
    assert {k: result[k] for k in ("before", "after", "diff", "low", "high")} == {
        "before": 0.5, "after": 0.5, "diff": 0.0, "low": -1.0, "high": 1.0}
    assert result["p_not_better"] == pytest.approx(0.75, abs=0.05)


def test_paired_bootstrap_constant_improvement_is_certain():
    # Every example gains exactly 1: no spread, so the interval is the difference itself and
    # the improvement is never in doubt; one example alone is the same case.
    assert metrics.paired_bootstrap_diff([0.0, 1.0], [1.0, 2.0]) == {
        "before": 0.5, "after": 1.5, "diff": 1.0, "low": 1.0, "high": 1.0, "p_not_better": 0.0}
    assert metrics.paired_bootstrap_diff([0.25], [0.75]) == {
        "before": 0.25, "after": 0.75, "diff": 0.5, "low": 0.5, "high": 0.5, "p_not_better": 0.0}


def test_paired_bootstrap_takes_exact_match_booleans():
    # Per-example exact match is a list of bools (`exact_match`); they count as 0/1 scores.
    before = [True, False, False, True, False]
    after = [True, True, False, True, True]
    result = metrics.paired_bootstrap_diff(before, after)
    assert (result["before"], result["after"], result["diff"]) == pytest.approx((0.4, 0.8, 0.4))
    assert 0.0 <= result["low"] <= result["diff"] <= result["high"] <= 0.8
    assert metrics.bootstrap_ci(after)["mean"] == pytest.approx(0.8)


def test_bootstrap_defaults_are_1000_resamples_95_percent_seed_0():
    # The documented defaults (the intervals in results/ were computed with them).
    values = np.random.default_rng(9).uniform(size=30).tolist()
    other = np.random.default_rng(10).uniform(size=30).tolist()
    assert metrics.bootstrap_ci(values) == metrics.bootstrap_ci(values, n_resamples=1000, confidence=0.95, seed=0)
    assert metrics.paired_bootstrap_diff(values, other) == metrics.paired_bootstrap_diff(
        values, other, n_resamples=1000, confidence=0.95, seed=0)


def test_bootstrap_argument_checks_name_the_problem():
    for confidence in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"^confidence must be strictly between 0 and 1, got {confidence}$"):
            metrics.bootstrap_ci([1.0, 2.0], confidence=confidence)
        with pytest.raises(ValueError, match="^confidence must be strictly between 0 and 1"):
            metrics.paired_bootstrap_diff([1.0, 2.0], [2.0, 1.0], confidence=confidence)
    with pytest.raises(ValueError, match="^n_resamples must be >= 1, got 0$"):
        metrics.bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="^n_resamples must be >= 1, got 0$"):
        metrics.paired_bootstrap_diff([1.0, 2.0], [2.0, 1.0], n_resamples=0)
    # One resample is allowed: both quantiles are that resample's mean.
    one = metrics.bootstrap_ci([1.0, 0.0], n_resamples=1)
    assert one["low"] == one["high"] and one["low"] in (0.0, 0.5, 1.0)
    one_paired = metrics.paired_bootstrap_diff([0.0, 1.0], [1.0, 0.0], n_resamples=1)
    assert one_paired["low"] == one_paired["high"] and one_paired["low"] in (-1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^values must be a non-empty list of numbers, got 2 values$"):
        metrics.bootstrap_ci([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="^values contains NaN or infinite values$"):
        metrics.bootstrap_ci([1.0, float("inf")])
    with pytest.raises(ValueError, match="^before must be a non-empty list of numbers, got 0 values$"):
        metrics.paired_bootstrap_diff([], [])
    with pytest.raises(ValueError, match="^before contains NaN or infinite values$"):
        metrics.paired_bootstrap_diff([float("nan"), 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="^after contains NaN or infinite values$"):
        metrics.paired_bootstrap_diff([1.0, 2.0], [1.0, float("-inf")])


def test_paired_bootstrap_length_mismatch():
    with pytest.raises(ValueError, match="^paired bootstrap needs one score per example in both lists: "
                                         "before has 3, after has 2$"):
        metrics.paired_bootstrap_diff([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("raw", "invented"),
    [
        ("The capital of France is Paris.", False),
        ("Paris.\nUser: and of Spain?", True),
        ("Paris.\n\n### Assistant: Madrid", True),
        ("Sure<start_of_turn>user\nthanks", True),
        ("Paris.\nuser\nthanks", True),
        ("Answer: Paris", False),
        ("The user asked about Paris.", False),
    ],
)
def test_invents_turn_sees_role_lines_and_the_start_token(raw, invented):
    from sftkit.chat import GEMMA
    from sftkit.metrics import invents_turn

    assert invents_turn(raw, GEMMA.start) is invented


def test_echoes_prompt_needs_the_whole_user_message():
    from sftkit.metrics import echoes_prompt

    prompt = "Explain the lungs in two or three sentences."
    assert echoes_prompt(f"{prompt} anaknya\n{prompt}", prompt)
    assert not echoes_prompt("The lungs help us breathe.", prompt)
    assert not echoes_prompt("Hi there", "Hi"), "a short message is too generic to count"


def test_echoes_prompt_counts_messages_from_twenty_characters():
    # The documented threshold: a (stripped) message of exactly `min_chars` = 20 characters counts,
    # one of 19 does not; surrounding whitespace of the message is not part of its length or of
    # what must be repeated.
    from sftkit.metrics import echoes_prompt

    twenty = "abcdefghij klmnopqrs"
    assert len(twenty) == 20
    assert echoes_prompt(f"so: {twenty} again", twenty)
    assert not echoes_prompt(f"so: {twenty[:19]} again", twenty[:19])
    assert echoes_prompt(f"so:{twenty}.", f"  {twenty}\n")
    assert not echoes_prompt(f"so:{twenty}.", twenty, min_chars=21)
