"""Shared fixtures: the prepared SmolLM2 tokenizer, the tiny random model and the real 135M model.

Everything here loads offline. The Hub is never contacted: ``HF_HUB_OFFLINE`` is set before
any Hugging Face library is imported, so a test that names a Hub id fails in seconds.

Torch runs single-threaded by default (``SFTKIT_TEST_THREADS`` overrides it): on a small
shared CPU box, two intra-op threads competing with another process were measured 2-20x
slower than one thread for these small models.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("SFTKIT_TEST_THREADS", "1")))

TINY = "tiny-smollm2"
REAL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer made ready for assistant-only SFT. Shared: never mutate it (deepcopy first)."""
    from sftkit.chat import prepare_tokenizer
    from sftkit.models import load_tokenizer

    return prepare_tokenizer(load_tokenizer(REAL))


@pytest.fixture(scope="session")
def make_tiny_model(tokenizer):
    """A factory of fresh, prepared tiny models (for tests that train or wrap a model)."""
    from sftkit.chat import prepare_model
    from sftkit.models import load_model

    def make():
        return prepare_model(load_model(TINY, dtype="float32", device="cpu"), tokenizer)

    return make


@pytest.fixture(scope="module")
def tiny_model(make_tiny_model):
    """A tiny random Llama (~0.4M parameters) with the real vocabulary, in eval mode. Read-only."""
    return make_tiny_model().eval()


@pytest.fixture(scope="session")
def real_model(tokenizer):
    """SmolLM2-135M-Instruct from the offline cache (fp32, CPU). Only for tests marked slow."""
    from sftkit.chat import prepare_model
    from sftkit.models import load_model

    return prepare_model(load_model(REAL, dtype="float32", device="cpu"), tokenizer).eval()


def _reset_sftkit_logger() -> None:
    import logging

    log = logging.getLogger("sftkit")
    log.handlers[:] = [handler for handler in log.handlers if isinstance(handler, logging.NullHandler)]
    log.setLevel(logging.NOTSET)
    log.propagate = True


@pytest.fixture(autouse=True)
def sftkit_logger_as_imported():
    """Every test starts and ends with the "sftkit" logger as importing sftkit leaves it (a NullHandler only).

    `sftkit.cli.main` and `sftkit.notebook.quiet_libraries` give it a handler on the sys.stdout of
    the moment, which in a test is that test's capture, and stop it propagating; left in place, a
    later test's messages would go to a closed capture and never reach `caplog`.
    """
    _reset_sftkit_logger()
    yield
    _reset_sftkit_logger()
