"""The one function that gives a run its training and held-out conversations.

Every entry point (the demo, `sftkit train`/`eval`, the trials, the notebooks, the
benchmarks) asks `load_run_data` for its data, so a source is split the same way
wherever it is used. It lives in the data layer: it reads a `RunConfig` and knows the data
sources, nothing above them.

Sources (``DataConfig.source``):

- ``offline-conversations``: the conversational set shipped with the package
  (`sftkit.offline_conversations`: distilled replies, system prompts, multi-turn rows and
  verifiable task rows; train/dev/test disjoint by topic), the CPU main job's data;
- ``builtin-tasks``: the built-in verifiable tasks (`sftkit.tasks`);
- a Hub id or a local json/jsonl/parquet path (`sftkit.data.load_conversations`).
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig

OFFLINE_CONVERSATIONS = "offline-conversations"


def load_run_data(cfg: RunConfig) -> tuple[Any, Any]:
    """Train and held-out `messages` datasets for a run config."""
    d = cfg.data
    if d.source == OFFLINE_CONVERSATIONS:
        from .offline_conversations import offline_conversation_splits

        if d.curriculum:
            raise ValueError("data.curriculum names built-in tasks; the offline conversations have no stages")
        return offline_conversation_splits(d.train_size, d.eval_size, eval_split=d.eval_split, seed=d.seed)
    if d.source == "builtin-tasks":
        from .tasks import make_task_splits

        return make_task_splits(d.train_size, d.eval_size, seed=d.seed, eval_split=d.eval_split, curriculum=d.curriculum)
    if d.curriculum:
        raise ValueError(f"data.curriculum names built-in tasks; source {d.source!r} has none "
                         "(set curriculum to {} or order your own data)")
    from .data import load_conversations, split_dataset

    data, report = load_conversations(d.source, limit=d.train_size + d.eval_size)
    print(f"loaded {report['kept']} of {report['rows_read']} conversations from {d.source}")
    return split_dataset(data, d.eval_size, seed=d.seed)
