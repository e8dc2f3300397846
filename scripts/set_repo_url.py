"""Write the repository Colab installs sftkit from into every notebook: one place for a fork to change.

    python scripts/set_repo_url.py            # after editing [tool.sftkit] in pyproject.toml

Reads ``repo-url`` and ``repo-ref`` (a tag or commit) from ``pyproject.toml``'s ``[tool.sftkit]``,
rewrites each ``notebooks/NN_*.py`` setup cell (``REPO_URL``, ``REPO_REF``) and its "Open in
Colab" badge (``colab.research.google.com/github/OWNER/REPO/blob/REF/...``), then carries the
edit into the paired ``.ipynb`` with ``jupytext --sync`` (outputs kept). Prints what changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r'^REPO_URL = ".*?"', re.MULTILINE)
REF_LINE = re.compile(r'^REPO_REF = ".*?"', re.MULTILINE)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/notebooks/")


def repo_settings(root: Path = ROOT) -> tuple[str, str]:
    """(repo-url, repo-ref) from pyproject.toml's [tool.sftkit]."""
    settings = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["sftkit"]
    url, ref = settings["repo-url"].rstrip("/"), settings["repo-ref"]
    if not url.startswith("https://github.com/") or url.count("/") != 4:
        raise ValueError(f"repo-url must look like https://github.com/OWNER/REPO, got {url!r}")
    if not ref or ref in ("main", "master"):
        raise ValueError(f"repo-ref must be a tag or a commit, not {ref!r}: Colab would install a moving branch")
    return url, ref


def badge_prefix(url: str, ref: str) -> str:
    owner_repo = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{ref}/notebooks/"


def rewrite(text: str, url: str, ref: str) -> str:
    text = URL_LINE.sub(f'REPO_URL = "{url}"', text)
    text = REF_LINE.sub(f'REPO_REF = "{ref}"', text)
    return BADGE.sub(badge_prefix(url, ref), text)


def main() -> int:
    url, ref = repo_settings()
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        text = source.read_text()
        new = rewrite(text, url, ref)
        if new != text:
            source.write_text(new)
            subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(source)], check=True,
                           capture_output=True)
            print(f"{source.name}: REPO_URL={url}, REPO_REF={ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
