"""Verifiable preferences: on-policy DPO pairs judged by IFEval's official checkers.

`sftkit.chapters.preference` pairs the SFT model's wrong replies with a written reference.
That teaches DPO to prefer text the model did not write, and the built-in tasks it uses are
narrow. Here both sides of every pair are the model's own samples, and a program decides
which is better: each prompt carries verifiable instructions ("write in lowercase", "no
commas", "exactly five bullets") and lm-eval's IFEval checkers (`sftkit.ifeval`, the code
the leaderboard runs) say whether a reply follows all of them. A preference is then a fact
about the reply, not a judge's opinion, and DPO moves probability from what this model gets
wrong towards what it already gets right sometimes. This is the idea of Tulu 3's verifiable
rewards (Lambert et al., 2024, which scores IFEval-style constraints with a program instead
of a reward model) used to rank on-policy samples into DPO pairs.

The steps, each a function so a notebook can show what happens between them:

1. `instruction_prompts`: the prompts are the instruction rows of the shipped *training* split
   (``resources/conversations.jsonl``, ``kind == "ifeval"``), with their instruction ids and
   arguments. The build (`scripts/build_conversations.py`, `sftkit.decontamination`) keeps that
   split apart from every evaluation set, so DPO on them never sees an evaluation prompt; the
   reference replies are not used (both sides of a pair are samples).
2. `sample_replies`: `k` sampled replies per prompt from any generator callable;
   `model_generator` makes one from a model (`sftkit.generate.generate_batch`: the chat
   template, batched, seeded, stopping at end-of-turn).
3. `verify_replies`: every reply scored by `sftkit.ifeval.score_ifeval` (strict: a reply
   passes when every instruction passes). A reply that did not stop within the token budget,
   or that loops (`sftkit.evaluation.LOOP_THRESHOLD` on the repeated-4-gram rate), fails too:
   the checkers judge the text, and a cut-off or looping text can still satisfy "lowercase".
4. `build_verified_pairs`: per prompt, chosen = the shortest passing reply, rejected = the
   reply with the most failures. Prompts where every reply passes or every reply fails carry
   no preference and are skipped, counted by reason in a `VerifiedPairsReport`.

The pairs are in TRL's conversational preference format, exactly as
`sftkit.chapters.preference.build_preference_pairs` writes them, so
`sftkit.chapters.preference.train_dpo` trains on them unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evalsets import read_jsonl
from ..evaluation import LOOP_THRESHOLD
from ..generate import Generation, generate_batch
from ..ifeval import IFEvalRow, as_messages, lm_eval_version, score_ifeval
from ..metrics import repeated_ngram_rate
from ..offline_conversations import RESOURCE
from ..report import markdown_table
from .preference import preference_pair

__all__ = [
    "ALL_PASSED",
    "NONE_PASSED",
    "SAME_TEXT",
    "SKIP_REASONS",
    "NOT_STOPPED",
    "LOOPED",
    "ReplyGenerator",
    "ScoredReply",
    "VerifiedPairsReport",
    "instruction_prompts",
    "model_generator",
    "sample_replies",
    "verify_replies",
    "build_verified_pairs",
    "verified_preference_pairs",
]

#: Why a prompt gave no pair. Fixed strings so that a report can count them.
ALL_PASSED = "all_passed"  # every reply passes: nothing to prefer against
NONE_PASSED = "none_passed"  # no reply passes: nothing to prefer
# The only passing and failing replies have the same text (one stopped, one was cut off exactly
# there): the chat template closes both turns, so the rendered pair would be identical.
SAME_TEXT = "same_text"
SKIP_REASONS = (ALL_PASSED, NONE_PASSED, SAME_TEXT)

#: Failures of a reply besides its instructions, in `ScoredReply.failures`.
NOT_STOPPED = "did not stop"
LOOPED = "looped"

#: What a generator is: the conversations to answer (each ends with a user turn) in, one
#: `sftkit.generate.Generation` per conversation out, in the same order.
ReplyGenerator = Callable[[list[list[dict[str, str]]]], Sequence[Generation]]

# The ``kind`` of the instruction-following rows in the offline conversations.
IFEVAL_KIND = "ifeval"


# --------------------------------------------------------------------------- prompts


def _prompt_row(record: dict[str, Any], where: str, number: int) -> IFEvalRow:
    """One training instruction row as an `IFEvalRow` (id ``<file>:<line>``), checked."""
    roles = [m.get("role") for m in record.get("messages") or [] if isinstance(m, dict)]
    # IFEval is single-turn, and its checkers see the prompt text (``combination:repeat_prompt``
    # compares against it): the user turn must be the whole prompt the model answers.
    if roles != ["user", "assistant"]:
        raise ValueError(f"{where}: an instruction row must be one user turn and its reply, got roles {roles}")
    for key in ("instruction_id_list", "kwargs"):
        if not isinstance(record.get(key), list):
            raise ValueError(f"{where}: an instruction row needs a list {key!r}, got {record.get(key)!r}")
    ids = record["instruction_id_list"]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        # The checkers' verdicts are kept per instruction id: a repeated id would hide one of them.
        raise ValueError(f"{where}: instruction id(s) {repeated} appear more than once")
    # As `sftkit.ifeval` stores kwargs: None values dropped (lm-eval ignores them too).
    kwargs = [{k: v for k, v in (d or {}).items() if v is not None} for d in record["kwargs"]]
    try:
        return IFEvalRow(key=number, prompt=record["messages"][0]["content"], instruction_id_list=ids,
                         kwargs=kwargs, id=where, extra={"topic": record.get("topic", "")})
    except ValueError as error:  # no instruction, or ids and kwargs of different lengths
        raise ValueError(f"{where}: {error}") from None


def instruction_prompts(subset: int | None = None, seed: int = 0, path: str | Path = RESOURCE) -> list[IFEvalRow]:
    """The instruction-following prompts of the offline training split, as IFEval rows.

    Rows of `path` (the shipped ``conversations.jsonl``) with ``split == "train"`` and
    ``kind == "ifeval"``, in file order; each row's id is ``<file name>:<line>``, its prompt the
    user turn (`sftkit.ifeval.as_messages` gives the conversation to generate from), and
    ``extra["topic"]`` its topic. With `subset`, that many rows drawn with
    ``random.Random(seed)`` and kept in file order: the same seed always gives the same prompts.

    Raises ValueError naming the line for a malformed instruction row, and when `subset` is
    not between 1 and the number of rows.
    """
    path = Path(path)
    rows = [
        _prompt_row(record, f"{path.name}:{number}", number)
        for number, record in read_jsonl(path.name, path.read_text(encoding="utf-8"))
        if record.get("split") == "train" and record.get("kind") == IFEVAL_KIND
    ]
    if not rows:
        raise ValueError(f"{path} has no training rows of kind {IFEVAL_KIND!r}")
    if subset is None:
        return rows
    if isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= len(rows):
        raise ValueError(f"subset must be an integer from 1 to {len(rows)} (the instruction rows), got {subset!r}")
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), subset))]


# --------------------------------------------------------------------------- sampling


def model_generator(model: Any, tokenizer: Any, max_new_tokens: int = 256, batch_size: int = 16,
                    temperature: float = 0.8, top_p: float = 0.95, seed: int = 0) -> ReplyGenerator:
    """A `ReplyGenerator` that samples replies from `model` through its chat template.

    Calls `sftkit.generate.generate_batch` with ``do_sample=True``: batched and left-padded,
    stopping at the end-of-turn token, `Generation.stopped` telling whether it did. The seed is
    set once per call, so the same prompts and settings give the same replies (on the same
    hardware). 256 new tokens is the budget the offline IFEval prompts are written for.

    The temperature stays near 1 on purpose: DPO's loss is about the policy's own
    probabilities, so the samples should come from close to its distribution (greedy decoding
    would give k identical replies); top-p cuts the far tail, where a small model's samples
    leave the language and every instruction fails anyway.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive (sampling), got {temperature}")

    def generate(conversations: list[list[dict[str, str]]]) -> list[Generation]:
        return generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              do_sample=True, temperature=temperature, top_p=top_p, seed=seed)

    return generate


def sample_replies(rows: Sequence[IFEvalRow], generate: ReplyGenerator, k: int = 4) -> list[list[Generation]]:
    """`k` replies to each row's prompt: ``result[i]`` holds row i's, in the order drawn.

    `generate` is called once with every conversation (each prompt repeated `k` times,
    consecutively), so a batched generator fills its batches; any callable with the
    `ReplyGenerator` contract works (tests pass one that returns written replies). Raises
    ValueError when it returns a different number of replies, TypeError naming the row
    and sample when a reply is not a `Generation`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (replies per prompt) must be a positive integer, got {k!r}")
    conversations = [as_messages(row) for row in rows for _ in range(k)]
    generations = list(generate(conversations))
    if len(generations) != len(conversations):
        raise ValueError(f"the generator returned {len(generations)} replies for {len(conversations)} "
                         f"conversations ({len(rows)} prompts x k={k})")
    for index, generation in enumerate(generations):
        if not isinstance(generation, Generation):
            raise TypeError(f"reply {index % k} to prompt {rows[index // k].id} is a {type(generation).__name__}, "
                            "not a sftkit.generate.Generation (its stopped flag is needed)")
    return [generations[i * k:(i + 1) * k] for i in range(len(rows))]


# --------------------------------------------------------------------------- verification


@dataclass
class ScoredReply:
    """One sampled reply with the checkers' verdict on each instruction and its stop/loop flags."""

    generation: Generation
    # Instruction id -> lm-eval's strict verdict, in the row's instruction order.
    checks: dict[str, bool]
    repeated_4gram_rate: float
    # Instruction ids scored by `sftkit.ifeval`'s regex fallback (no nltk punkt_tab), not officially.
    fallback: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.generation.text

    @property
    def looped(self) -> bool:
        return self.repeated_4gram_rate > LOOP_THRESHOLD

    @property
    def failures(self) -> list[str]:
        """The failed instruction ids, then `NOT_STOPPED` and `LOOPED` where they apply."""
        failed = [instruction for instruction, passed in self.checks.items() if not passed]
        return failed + [NOT_STOPPED] * (not self.generation.stopped) + [LOOPED] * self.looped

    @property
    def passed(self) -> bool:
        """Every instruction passes (IFEval's strict prompt-level verdict), it stopped and did not loop."""
        return not self.failures


def verify_replies(rows: Sequence[IFEvalRow], replies: Sequence[Sequence[Generation]],
                   punkt: bool | None = None) -> list[list[ScoredReply]]:
    """Each reply of `replies[i]` (to ``rows[i]``) scored with lm-eval's strict IFEval checkers.

    One `sftkit.ifeval.score_ifeval` call over all replies (its official path, or its stated
    fallback for the two nltk kinds when punkt_tab is missing: `punkt` as there). Raises
    ValueError when `replies` is not one list per row, or a row has an instruction id lm-eval
    does not know (naming the row).
    """
    if len(rows) != len(replies):
        raise ValueError(f"one list of replies per prompt is needed: {len(rows)} prompts, {len(replies)} lists")
    flat_rows = [row for row, group in zip(rows, replies) for _ in group]
    flat = [generation for group in replies for generation in group]
    if not flat:
        raise ValueError("no replies to verify")
    # Only the per-reply verdicts are used: one bootstrap resample keeps the intervals from costing time.
    result = score_ifeval(flat_rows, [g.text for g in flat], resamples=1, punkt=punkt)
    fallback = set(result["fallback_kinds"])
    scored = [ScoredReply(generation, dict(verdict["checks"]), repeated_ngram_rate(generation.text, 4),
                          tuple(i for i in row.instruction_id_list if i in fallback))
              for row, generation, verdict in zip(flat_rows, flat, result["per_prompt"])]
    groups, start = [], 0
    for group in replies:
        groups.append(scored[start:start + len(group)])
        start += len(group)
    return groups


# --------------------------------------------------------------------------- pairs


def _words(reply: ScoredReply) -> int:
    return len(reply.text.split())


def _choose(scored: Sequence[ScoredReply]) -> tuple[int, int] | str:
    """(chosen index, rejected index) among one prompt's replies, or the reason there is no pair.

    Chosen: the shortest passing reply, in whitespace words (ties: the first drawn). DPO is
    known to drift towards longer replies when chosen replies tend to be longer; of replies
    that all follow the instructions, the shortest is the one with nothing superfluous, and a
    small model's problem is rambling past the answer, not stopping too soon.
    Rejected: the failing reply with the most failures (failed instructions, not stopping,
    looping; ties: the first drawn, which is random with respect to content since samples are
    independent), the clearest contrast to the chosen one. Its text must differ from the
    chosen reply's, else the rendered pair would be identical (`SAME_TEXT`).
    """
    passing = [i for i, reply in enumerate(scored) if reply.passed]
    failing = [i for i, reply in enumerate(scored) if not reply.passed]
    if not failing:
        return ALL_PASSED
    if not passing:
        return NONE_PASSED
    chosen = min(passing, key=lambda i: (_words(scored[i]), i))
    different = [i for i in failing if scored[i].text.strip() != scored[chosen].text.strip()]
    if not different:
        return SAME_TEXT
    rejected = min(different, key=lambda i: (-len(scored[i].failures), i))
    return chosen, rejected


@dataclass
class VerifiedPairsReport:
    """What `build_verified_pairs` made of the replies: every prompt is a pair or a counted skip."""

    prompts: int
    replies: int
    passing_replies: int
    not_stopped: int
    looped: int
    pairs: int
    # Every reason of `SKIP_REASONS` -> how many prompts it skipped (0 included), and which.
    skipped: dict[str, int]
    skipped_ids: dict[str, list[str]]
    # The prompt id of each pair, aligned with the pairs.
    pair_ids: list[str]
    # Instruction id -> {"replies": replies checked, "passed": strict passes, "pass_rate"}.
    per_instruction: dict[str, dict[str, float]]
    protocol: str = ""
    # Instruction ids scored by the regex fallback (not the official checker), if any.
    fallback_kinds: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The counts, the skips by reason and the pass rate per instruction id, as Markdown tables."""
        share = f" ({self.passing_replies / self.replies:.1%})" if self.replies else ""
        counts = [("prompts", self.prompts), ("replies", self.replies),
                  ("passing replies (every instruction, stopped, no loop)", f"{self.passing_replies}{share}"),
                  ("replies that did not stop", self.not_stopped), ("replies that loop", self.looped),
                  ("pairs", self.pairs),
                  *((f"skipped: {reason}", count) for reason, count in self.skipped.items())]
        per_id = [(instruction, int(v["replies"]), int(v["passed"]), f"{v['pass_rate']:.2f}")
                  for instruction, v in self.per_instruction.items()]
        fallback = ", ".join(self.fallback_kinds) or "none, every instruction scored by lm-eval"
        lines = [*markdown_table(("count", "value"), counts, align=("left", "right")), "",
                 *markdown_table(("instruction id", "replies", "passed", "pass rate"), per_id,
                                 align=("left", "right", "right", "right")), "",
                 f"Checker: {self.protocol}. Fallback kinds (not official): {fallback}."]
        return "\n".join(lines)


def _per_instruction(scored: Sequence[Sequence[ScoredReply]]) -> dict[str, dict[str, float]]:
    """Strict pass counts and rate per instruction id over all replies (checker verdicts only)."""
    tally: dict[str, list[int]] = {}
    for group in scored:
        for reply in group:
            for instruction, passed in reply.checks.items():
                counts = tally.setdefault(instruction, [0, 0])
                counts[0] += 1
                counts[1] += int(passed)
    return {instruction: {"replies": n, "passed": m, "pass_rate": m / n}
            for instruction, (n, m) in sorted(tally.items())}


def build_verified_pairs(
    rows: Sequence[IFEvalRow], scored: Sequence[Sequence[ScoredReply]]
) -> tuple[list[dict[str, list[dict[str, str]]]], VerifiedPairsReport]:
    """Preference pairs from the verified replies (`verify_replies`), one per prompt at most.

    The rule is `_choose`'s: chosen = the shortest passing reply, rejected = the failing reply
    with the most failures. Rows are in TRL's conversational preference format, as
    `sftkit.chapters.preference.build_preference_pairs` writes them (`preference_pair`)::

        {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [{...}]}

    A prompt with no pair is counted under its reason (`SKIP_REASONS`), never dropped silently.
    """
    if len(rows) != len(scored):
        raise ValueError(f"one list of scored replies per prompt is needed: {len(rows)} prompts, {len(scored)} lists")
    pairs: list[dict[str, list[dict[str, str]]]] = []
    pair_ids: list[str] = []
    skipped_ids: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
    for row, group in zip(rows, scored):
        if not group:
            raise ValueError(f"prompt {row.id} has no replies")
        choice = _choose(group)
        if isinstance(choice, str):
            skipped_ids[choice].append(row.id)
            continue
        chosen, rejected = choice
        pairs.append(preference_pair(as_messages(row), group[chosen].text, group[rejected].text))
        pair_ids.append(row.id)
    replies = [reply for group in scored for reply in group]
    report = VerifiedPairsReport(
        prompts=len(rows), replies=len(replies), passing_replies=sum(r.passed for r in replies),
        not_stopped=sum(not r.generation.stopped for r in replies), looped=sum(r.looped for r in replies),
        pairs=len(pairs), skipped={reason: len(ids) for reason, ids in skipped_ids.items()},
        skipped_ids=skipped_ids, pair_ids=pair_ids, per_instruction=_per_instruction(scored),
        protocol=f"IFEval strict, official checkers via lm-eval {lm_eval_version()}",
        fallback_kinds=sorted({i for r in replies for i in r.fallback}),
    )
    return pairs, report


def verified_preference_pairs(
    rows: Sequence[IFEvalRow], generate: ReplyGenerator, k: int = 4, punkt: bool | None = None
) -> tuple[list[dict[str, list[dict[str, str]]]], VerifiedPairsReport]:
    """The whole path: `k` samples per prompt (`sample_replies`), verified (`verify_replies`), paired
    (`build_verified_pairs`). `generate` is a `ReplyGenerator`, from `model_generator` for a model."""
    scored = verify_replies(rows, sample_replies(rows, generate, k), punkt=punkt)
    return build_verified_pairs(rows, scored)
