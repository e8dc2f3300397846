"""Model-judged pairwise comparison of two models' replies (optional; labelled as model-judged).

Overlap metrics (ROUGE, BLEU) reward wording close to one reference, which says little about
open conversation. Where a stronger instruct model is at hand (Colab), it can be asked which of
two replies to the same prompt is better. Such judges are known to prefer whichever reply they
read first (position bias), so each pair is judged twice, once in each order, and a model wins a
prompt only when its reply is preferred on balance over both orders: a judge that always picks
the first reply gives one win to each side and the prompt counts as a tie. Win, tie and loss
rates over prompts get percentile-bootstrap intervals (`sftkit.metrics.bootstrap_ci`), as every
other metric here.

A judge is any callable ``judge(prompt, reply_a, reply_b) -> "A" | "B" | "tie"``, so the
order-swapping and aggregation are tested with deterministic fake judges; `hf_judge` makes one
from an instruct model (greedy, a one-word verdict). `load_judge` loads the default judge from
the Hub and, offline, says in one line which judge it would use and returns None, so a
notebook cell can skip. The verdicts are a model's opinion, not ground truth: a judge has its
own biases (length, style, self-preference), and its scores are reported as model-judged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .metrics import bootstrap_ci

logger = logging.getLogger(__name__)

# (prompt, reply shown first as A, reply shown second as B) -> "A", "B", "tie", or None when unparsable
Judge = Callable[[str, str, str], "str | None"]
VERDICTS = ("A", "B", "tie")
# Instruct models that fit a free Colab T4 next to the tuned model, permissively licensed
# (Apache-2.0); the first is the default.
JUDGES = ("Qwen/Qwen2.5-1.5B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct")
DEFAULT_JUDGE = JUDGES[0]

JUDGE_PROMPT = """You are comparing two assistant replies to the same user message.

User message:
{prompt}

Reply A:
{a}

Reply B:
{b}

Which reply is more helpful, correct and appropriate as an answer to the user message? \
Ignore the order in which they are shown and their length as such. \
Answer with exactly one word: A, B, or tie."""


class JudgeError(ValueError):
    """The inputs cannot be judged (lists of different lengths, a verdict outside A/B/tie)."""


def parse_verdict(text: str) -> str | None:
    """The verdict in a judge's answer: "A", "B" or "tie" from its first word, else None (unparsable)."""
    match = re.search(r"[A-Za-z]+", text.replace("[[", " ").replace("]]", " "))
    if not match:
        return None
    word = match.group(0)
    if word in ("A", "B"):
        return word
    if word.lower() in ("tie", "equal", "both", "neither"):
        return "tie"
    return None


@dataclass
class PairwiseResult:
    """Win/tie/loss of the `tuned` model against the `base` one over prompts, judged in both orders.

    Per prompt, ``score`` is the tuned model's points summed over the two orders (+1 each time
    it is preferred, -1 each time the base is, 0 for a tie): a win is a positive sum, a loss a
    negative one, a tie zero. ``rates`` holds each outcome's share with a bootstrap 95%
    interval; ``position_consistency`` is the share of prompts whose two verdicts name the same
    reply (or both a tie), and ``first_position_rate`` the share of decisive verdicts that chose
    the reply shown first: far from 0.5, the judge has a position bias that the two orders cancel.
    """

    judge: str
    n: int
    outcomes: list[str]  # "win", "tie" or "loss" for the tuned model, per prompt
    verdicts: list[tuple[str, str]]  # (tuned shown second, tuned shown first), as the judge answered
    rates: dict[str, dict[str, float]]
    position_consistency: float
    first_position_rate: float | None
    unparsable: int = 0
    label: str = "model-judged"

    def table(self) -> dict[str, str]:
        """{outcome: "mean [low, high]"} for display."""
        return {k: f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in self.rates.items()}


def _points(verdict: str, tuned_is: str) -> int:
    if verdict == "tie":
        return 0
    return 1 if verdict == tuned_is else -1


def judge_pairs(prompts: Sequence[str], base_replies: Sequence[str], tuned_replies: Sequence[str], judge: Judge,
                judge_name: str = "judge", n_resamples: int = 1000, seed: int = 0) -> PairwiseResult:
    """Judge every (base, tuned) pair in both orders and aggregate to win/tie/loss with intervals."""
    if not (len(prompts) == len(base_replies) == len(tuned_replies)):
        raise JudgeError(f"{len(prompts)} prompts, {len(base_replies)} base replies and {len(tuned_replies)} tuned "
                         "replies: one of each per prompt is needed")
    if not prompts:
        raise JudgeError("no prompts to judge")
    outcomes, verdicts, unparsable = [], [], 0
    consistent, first_chosen, decisive = 0, 0, 0
    for index, (prompt, base, tuned) in enumerate(zip(prompts, base_replies, tuned_replies)):
        second = judge(prompt, base, tuned)  # tuned shown second, as B
        first = judge(prompt, tuned, base)  # tuned shown first, as A
        for verdict in (second, first):
            if verdict is None:
                unparsable += 1
            elif verdict not in VERDICTS:
                raise JudgeError(f"prompt {index}: the judge answered {verdict!r}; a judge returns one of {VERDICTS}")
        second, first = second or "tie", first or "tie"  # an unparsable verdict counts as a tie
        verdicts.append((second, first))
        score = _points(second, "B") + _points(first, "A")
        outcomes.append("win" if score > 0 else "loss" if score < 0 else "tie")
        consistent += _points(second, "B") == _points(first, "A")
        for verdict in (second, first):
            if verdict != "tie":
                decisive += 1
                first_chosen += verdict == "A"
    rates = {outcome: bootstrap_ci([float(o == outcome) for o in outcomes], n_resamples, seed=seed)
             for outcome in ("win", "tie", "loss")}
    # Win rate counting a tie as half a win: one number for "is tuned better", with its interval.
    rates["win + tie/2"] = bootstrap_ci([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes], n_resamples,
                                        seed=seed)
    return PairwiseResult(judge=judge_name, n=len(outcomes), outcomes=outcomes, verdicts=verdicts, rates=rates,
                          position_consistency=consistent / len(outcomes),
                          first_position_rate=first_chosen / decisive if decisive else None, unparsable=unparsable)


JUDGE_PAD = "<pad>"


def judge_pad_id(model: Any, tokenizer: Any) -> int:
    """Give the judge's tokenizer a pad token distinct from its EOS, and return its id.

    A pad equal to EOS is the pattern that trains and decodes wrongly elsewhere in sftkit (a
    mask on padding hides every EOS too), and some judges ship it (SmolLM2-Instruct pads with
    ``<|im_end|>``). The judge reads one prompt at a time with its attention mask, so the pad id
    is never in its input and is only named to `generate`; any existing token that is not EOS
    will do, and the least invasive one is taken: the tokenizer's own pad, else its unknown
    token (which a byte-level tokenizer never produces from text), and only when both are EOS a
    new ``<pad>`` special token, with the model's embeddings resized only if they lack its row.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return tokenizer.pad_token_id
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in (None, eos):
        tokenizer.pad_token = tokenizer.unk_token
        return tokenizer.pad_token_id
    tokenizer.add_special_tokens({"pad_token": JUDGE_PAD})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return tokenizer.pad_token_id


def hf_judge(model: Any, tokenizer: Any, max_new_tokens: int = 4) -> Judge:
    """A judge from an instruct model and its own chat template: greedy, a one-word verdict (None if unparsable).

    The tokenizer gets a pad token distinct from EOS (`judge_pad_id`), which is passed to
    `generate` as it is: ``pad_token_id or eos_token_id`` would turn a pad id of 0 into EOS.
    """
    import torch

    pad_id = judge_pad_id(model, tokenizer)

    @torch.no_grad()
    def judge(prompt: str, a: str, b: str) -> str | None:
        messages = [{"role": "user", "content": JUDGE_PROMPT.format(prompt=prompt, a=a, b=b)}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True).to(model.device)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        return parse_verdict(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))

    return judge


def prompt_text(messages: Sequence[dict[str, str]]) -> str:
    """A conversation up to the reply being judged, as plain text for the judge (every turn, role first)."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def judge_evaluations(conversations: Sequence[Sequence[dict[str, str]]], base_replies: Sequence[str],
                      tuned_replies: Sequence[str], judge: Judge, judge_name: str = DEFAULT_JUDGE,
                      n_resamples: int = 1000, seed: int = 0) -> PairwiseResult:
    """`judge_pairs` on held-out conversations (each ending with the user turn the replies answer)."""
    return judge_pairs([prompt_text(c) for c in conversations], base_replies, tuned_replies, judge,
                       judge_name=judge_name, n_resamples=n_resamples, seed=seed)


def load_judge(name: str = DEFAULT_JUDGE, dtype: str = "auto",
               require_gpu: bool = True) -> Judge | None:
    """The judge `name` loaded as an `hf_judge`; None, after one line saying why, when it cannot run here.

    Offline (the Hub unreachable and the model not cached) it says which judge it would use.
    With `require_gpu` it also skips on a CPU: a 1.5B judge reading two replies per prompt
    twice is minutes per few prompts there.
    """
    import torch

    from .models import ModelSourceError, load_model, load_tokenizer

    if require_gpu and not torch.cuda.is_available():
        logger.warning(f"model-judged comparison skipped: it would use {name} on a GPU (none here)")
        return None
    try:
        tokenizer = load_tokenizer(name)
        model = load_model(name, dtype=dtype).eval()
    except ModelSourceError:
        logger.warning(f"model-judged comparison skipped: it would use {name} from the Hugging Face Hub, "
                       "which is unreachable here")
        return None
    return hf_judge(model, tokenizer)
