"""The offline-model cache (sftkit.models): converted once, even when processes start together.

`accelerate launch` with two processes, or parallel test workers, can reach a cold cache at
the same moment. Each cached artefact must then be written once, by one process, while the
others wait and load the result; no half-written or partial folder may be left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sftkit import models
from sftkit.models import CHECKPOINT_FILES, ModelSourceError

PROCESSES = 3

# Run in each process. Every checkpoint written through transformers' save_pretrained is
# recorded (by the name of the cached artefact it becomes), which counts conversions without
# relying on anything sftkit reports about itself. A file barrier makes the processes call
# resolve_source together, after their slow imports, so they really race for the cold cache.
CHILD = r"""
import json, os, sys, time
from pathlib import Path

import torch
import transformers

torch.set_num_threads(1)
saved = []
save_pretrained = transformers.PreTrainedModel.save_pretrained

def counting_save_pretrained(self, folder, *args, **kwargs):
    saved.append(Path(folder).name.split(".partial")[0])
    return save_pretrained(self, folder, *args, **kwargs)

transformers.PreTrainedModel.save_pretrained = counting_save_pretrained
from sftkit.models import load_model, resolve_source

barrier = Path(sys.argv[1])
(barrier / str(os.getpid())).touch()
deadline = time.monotonic() + 120
while len(list(barrier.iterdir())) < int(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.05)

folder = resolve_source("tiny-smollm2")
model = load_model("tiny-smollm2", dtype="float32", device="cpu")
weight = model.get_input_embeddings().weight
print(json.dumps({"folder": str(folder), "saved": saved, "embedding_sum": float(weight.double().sum())}))
"""


@pytest.mark.slow
def test_processes_starting_on_an_empty_cache_convert_once_and_all_load(tmp_path):
    cache = tmp_path / "cache"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "SFTKIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(barrier), str(PROCESSES)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(PROCESSES)]
    outputs = [child.communicate(timeout=600) for child in children]
    print(f"{PROCESSES} processes on an empty cache: {time.perf_counter() - started:.1f} s")

    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, f"a process failed:\n{out[-2000:]}\n{err[-4000:]}"
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    saved = sorted(name for report in reports for name in report["saved"])
    assert saved == ["smollm2-135m-instruct", "tiny-smollm2-seed0"], (
        f"each artefact must be converted by exactly one process, got {saved}")

    target = cache / "tiny-smollm2-seed0"
    assert {report["folder"] for report in reports} == {str(target)}
    leftovers = sorted(path.name for path in cache.iterdir() if ".partial" in path.name)
    assert not leftovers, f"partial conversions left in the cache: {leftovers}"
    for name in ("smollm2-135m-instruct", "tiny-smollm2-seed0"):
        assert models._complete(cache / name, CHECKPOINT_FILES), f"{name} is incomplete"

    from safetensors.torch import load_file

    weights = load_file(target / "model.safetensors")
    embedding_sum = float(weights["model.embed_tokens.weight"].double().sum())
    assert [report["embedding_sum"] for report in reports] == [embedding_sum] * PROCESSES, (
        "every process must load the one cached checkpoint")


# --------------------------------------------------------------------------- the lock helper, fast


def _writer(calls: list[str], delay: float = 0.0, files: tuple[str, ...] = ("a.txt", "b.txt")):
    def write(partial: Path) -> None:
        calls.append(partial.name)
        time.sleep(delay)  # long enough for the other thread to reach the lock
        for name in files:
            (partial / name).write_text(name)

    return write


def test_two_threads_convert_once_and_both_see_the_complete_folder(tmp_path):
    target = tmp_path / "artefact"
    calls: list[str] = []
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(models._convert_once(target, ("a.txt", "b.txt"), _writer(calls, delay=0.5)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(calls) == 1 and sorted(results) == [False, True], (calls, results)
    assert calls[0].startswith("artefact.partial-"), "the partial folder's name is the writer's own"
    assert sorted(path.name for path in target.iterdir()) == ["a.txt", "b.txt"]
    assert not list(tmp_path.glob("artefact.partial*"))


def test_stale_partials_and_an_incomplete_target_are_replaced(tmp_path):
    target = tmp_path / "artefact"
    for stale in (tmp_path / "artefact.partial", tmp_path / "artefact.partial-4242-deadbeef"):
        stale.mkdir()
        (stale / "a.txt").write_text("from a process that was killed")
    target.mkdir()
    (target / "a.txt").write_text("incomplete: b.txt is missing")
    (tmp_path / "artefact-other.partial-1").mkdir()  # another artefact's: not ours to remove

    calls: list[str] = []
    assert models._convert_once(target, ("a.txt", "b.txt"), _writer(calls)) is True
    assert (target / "a.txt").read_text() == "a.txt" and (target / "b.txt").is_file()
    assert sorted(path.name for path in tmp_path.iterdir() if ".partial" in path.name) == ["artefact-other.partial-1"]
    assert models._convert_once(target, ("a.txt", "b.txt"), _writer(calls)) is False
    assert len(calls) == 1, "a complete artefact is not written again"


def test_a_failed_or_short_write_leaves_nothing_and_releases_the_lock(tmp_path):
    target = tmp_path / "artefact"

    def fail(partial: Path) -> None:
        (partial / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        models._convert_once(target, ("a.txt", "b.txt"), fail)
    with pytest.raises(ModelSourceError, match="left out b.txt"):
        models._convert_once(target, ("a.txt", "b.txt"), _writer([], files=("a.txt",)))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["artefact.lock"], "only the lock file remains"
    assert models._convert_once(target, ("a.txt", "b.txt"), _writer([])) is True, "the lock was released"


def test_a_single_file_artefact_is_written_whole(tmp_path):
    target = tmp_path / "joined.bin"

    def join(partial: Path) -> None:
        with partial.open("xb") as out:
            out.write(b"chunk1chunk2")

    assert models._convert_once(target, (), join) is True
    assert target.read_bytes() == b"chunk1chunk2"
    assert models._convert_once(target, (), join) is False
    assert not list(tmp_path.glob("joined.bin.partial*"))
