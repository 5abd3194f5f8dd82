"""The documentation stays honest: the README stays short, every relative link (and anchor)
in README.md and docs/*.md resolves, every repository path named in inline code exists, and
every ``harness COMMAND`` shown in a code block of those pages is a command that ``harness
--help`` lists (and, for command groups, a subcommand that ``harness GROUP --help`` lists)."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
#: a repository path in inline code, e.g. `harness/features/extract.py` (no placeholders or globs)
REPO_PATH = re.compile(r"`((?:harness|tasks|upstreams|tests|scripts|bench|benchmarks|examples|results|docs)/[\w./-]*)`")
#: `harness CMD` as a command in a shell line (also `$(which harness) CMD`), not harness/ or harness.x
COMMAND = re.compile(r"(?<![\w./-])harness\)?[ \t]+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?")


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", page.read_text())):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]  # http:, https:, mailto:, file: ...


@lru_cache(maxsize=None)
def listed_commands(*group: str) -> frozenset[str]:
    """Subcommands listed by ``python -m harness.cli [GROUP] --help`` (empty when there are none).

    argparse lists subparsers under "positional arguments:", one name per line four spaces in
    (plain positionals sit two spaces in, wrapped help lines further)."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *group, "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if "positional arguments:" not in proc.stdout:
        return frozenset()
    block = proc.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return frozenset(re.findall(r"^    ([a-z][\w-]*)", block, re.M))


def shown_commands(page: Path) -> list[tuple[str, str | None]]:
    """(command, next word) for every `harness COMMAND` in the page's shell code blocks."""
    found = []
    for lang, body in FENCE.findall(page.read_text()):
        if lang.strip() in ("python", "toml", "yaml", "json"):
            continue
        for m in COMMAND.finditer(body):
            found.append((m.group(1), m.group(2)))
    return found


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it at most {MAX_README_LINES} (detail goes to docs/)"


def test_every_docs_page_is_reachable_from_the_readme():
    assert len(PAGES) > 1, "docs/ has no pages"
    reached, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.exists():
            continue
        reached.add(page)
        todo.extend((page.parent / t.partition("#")[0]).resolve() for t in relative_links(page) if t.partition("#")[0])
    unreached = [str(p.relative_to(ROOT)) for p in PAGES if p.resolve() not in reached]
    assert not unreached, f"no chain of links from README.md leads to {unreached}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    bad = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(page: Path):
    """Code paths named in the text follow the code when it moves (harness/pretrain.py did)."""
    missing = sorted({p for p in REPO_PATH.findall(FENCE.sub("", page.read_text())) if not (ROOT / p).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def example_plugin_names() -> set[str]:
    """Names the example plugin package registers (pages about extending show its commands, which
    exist once that package is installed)."""
    text = (ROOT / "examples" / "plugins" / "harness-example" / "pyproject.toml").read_text()
    return set(re.findall(r"^([a-z_][a-z0-9_]*)\s*=\s*\"harness_example\.", text, flags=re.M))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_commands_exist(page: Path):
    commands = listed_commands()
    assert {"run", "report", "recommend", "analyze"} <= commands, f"could not parse `harness --help`: {commands}"
    bad = []
    for command, sub in shown_commands(page):
        if command not in commands:
            bad.append(f"harness {command}")
            continue
        subs = listed_commands(command)
        if subs and sub is not None and sub not in subs and sub not in example_plugin_names():
            bad.append(f"harness {command} {sub} (not one of {sorted(subs)})")
    assert not bad, f"{page.relative_to(ROOT)} shows commands `harness --help` does not list: {bad}"


def test_the_readme_shows_the_tour_commands():
    shown = {c for c, _ in shown_commands(README)}
    assert {"run", "report", "recommend", "analyze"} <= shown


def test_checks_catch_what_they_should(tmp_path: Path):
    """The parsers above find a broken link, a bad anchor and an unknown command."""
    page = tmp_path / "page.md"
    page.write_text("# A title: with `code`\n\n[ok](#a-title-with-code) [gone](missing.md) "
                    "[web](https://example.org) `[not](a-link.md)`\n\n```bash\nharness runn --x\n"
                    "$(which harness) run --y\n```\n")
    assert anchors(page) == {"a-title-with-code"}
    assert relative_links(page) == ["#a-title-with-code", "missing.md"]
    assert shown_commands(page) == [("runn", None), ("run", None)]
    assert "runn" not in listed_commands()
    assert REPO_PATH.findall("`harness/pretrain.py` and `tasks/<task>.yaml` and `harness_example/x.py`") == [
        "harness/pretrain.py"]
