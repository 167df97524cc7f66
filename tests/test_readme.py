"""The README is a front door that works: its links resolve, its commands parse, its `make` targets exist.

Checked on the files themselves (no network, no data): every relative link in README.md, BENCHMARKS.md and
docs/*.md names a file of the repository (and a heading, for `#anchor` links into Markdown); every
`maskcls ...` line of the shell blocks of the README and of the reference pages in docs/ parses with the real
CLI parser, as `maskcls` itself would take it; every `make X` named in the README is a Makefile target; the README stays at most 200 lines.

Commands and links for features still being built are listed in PENDING_* below and marked xfail
(strict: once the feature is merged they pass, the xfail then fails, and the entry must be removed).
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from maskcls.cli import UsageError, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]

# README commands whose options land with other issues; they do not parse before those branches merge.
PENDING_COMMANDS: dict[str, str] = {}
# Links to files that other branches add.
PENDING_LINKS: dict[str, str] = {}
PENDING_MAKE: dict[str, str] = {}

FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def blocks(path: Path, langs: tuple[str, ...]) -> list[str]:
    """The lines of the fenced code blocks of ``path`` whose language is one of ``langs``."""
    out, lang = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line.strip())
        if m:
            lang = m.group(1) if lang is None else None
            continue
        if lang in langs:
            out.append(line)
    return out


def prose(path: Path) -> str:
    """``path`` without its fenced code blocks (links in code are not links)."""
    keep, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
        elif not inside:
            keep.append(line)
    return "\n".join(keep)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", prose(path), re.M)}


def relative_links() -> list[tuple[str, str]]:
    """(document, link) for every link that is not a web address or an anchor into the same page."""
    found = []
    for doc in DOCS:
        for target in LINK.findall(prose(doc)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            found.append((str(doc.relative_to(ROOT)), target))
    return list(dict.fromkeys(found))


def link_params():
    params = []
    for doc, target in relative_links():
        path = (ROOT / doc).parent / target.split("#")[0]
        rel = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else target
        marks = [pytest.mark.xfail(reason=PENDING_LINKS[rel], strict=True)] if rel in PENDING_LINKS else []
        params.append(pytest.param(doc, target, marks=marks, id=f"{doc}->{target}"))
    return params


def shell_lines(path: Path) -> list[str]:
    """The lines of ``path``'s shell blocks, backslash continuations joined."""
    return "\n".join(blocks(path, ("bash", "sh", "shell", "console"))).replace("\\\n", " ").splitlines()


def commands(docs=(README,)) -> list[str]:
    """Every `maskcls ...` line of the shell blocks of ``docs``, comments cut off."""
    cmds = []
    for doc in docs:
        for line in shell_lines(doc):
            words = shlex.split(line, comments=True)
            if words and (words[0] == "maskcls" or words[0].endswith("/bin/maskcls")):  # .venv/bin/maskcls too
                cmds.append(shlex.join(["maskcls", *words[1:]]))
    return list(dict.fromkeys(cmds))


def readme_commands() -> list[str]:
    return commands((README,))


def parse(command: str):
    """Parse like `maskcls` does (cli.main): argparse, then key=value words after options are overrides."""
    args, extra = build_parser().parse_known_args(shlex.split(command)[1:])
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        raise UsageError(f"unrecognized arguments: {' '.join(stray)}")
    return args


# The reference pages whose commands must parse too (not docs/benchmarks-history.md: old runs' command lines).
REFERENCE = [ROOT / "docs" / n for n in ("usage.md", "serving.md", "scaling.md", "decisions.md")]


def command_params(docs):
    return [pytest.param(c, marks=[pytest.mark.xfail(reason=PENDING_COMMANDS[c], strict=True, raises=UsageError)]
                         if c in PENDING_COMMANDS else [], id=c) for c in commands(docs)]


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def readme_make_names() -> list[str]:
    names = []
    for line in blocks(README, ("bash", "sh", "shell", "console")):
        names += re.findall(r"^\s*make\s+([\w.-]+)", line)
    names += re.findall(r"`make\s+([\w.-]+)", prose(README))
    return sorted(set(names))


@pytest.mark.parametrize("doc,target", link_params())
def test_relative_link_resolves(doc, target):
    path, _, anchor = target.partition("#")
    file = (ROOT / doc).parent / path
    assert file.exists(), f"{doc}: link to {target} names no file ({file.relative_to(ROOT)})"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), f"{doc}: link to {target}: no heading with anchor #{anchor} in {path}"


def test_docs_have_links_and_commands():
    """Guards the collectors above: an empty list would make every parametrised test vacuous."""
    targets = {t for _, t in relative_links()}
    assert {"docs/usage.md", "BENCHMARKS.md", "RELIABILITY.md"} <= targets
    assert len(readme_commands()) >= 10
    assert len(commands(REFERENCE)) >= 25
    assert {"demo", "test"} <= set(readme_make_names())


@pytest.mark.parametrize("command", command_params((README,)))
def test_readme_command_parses(command):
    args = parse(command)
    assert args.mode == command.split()[1]


@pytest.mark.parametrize("command", command_params(REFERENCE))
def test_reference_command_parses(command):
    args = parse(command)
    assert args.mode == command.split()[1]


def test_pending_lists_name_what_the_docs_hold():
    """A pending entry that no longer appears in the docs is stale: remove it."""
    assert set(PENDING_COMMANDS) <= set(readme_commands())
    linked = {((ROOT / d).parent / t.split("#")[0]).resolve() for d, t in relative_links()}
    assert {(ROOT / p).resolve() for p in PENDING_LINKS} <= linked
    assert set(PENDING_MAKE) <= set(readme_make_names())


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.xfail(reason=PENDING_MAKE[n], strict=True)]
                                               if n in PENDING_MAKE else []) for n in readme_make_names()])
def test_readme_make_target_exists(name):
    assert name in make_targets(), f"README names `make {name}`, which the Makefile does not define"


def test_readme_python_compiles():
    code = "\n".join(blocks(README, ("python",)))
    assert "import" in code
    ast.parse(code)


def test_readme_is_a_front_door():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_benchmarks_default_table_rows():
    """Other checks and the shipped-model issue read these rows from the default table."""
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    for row in ("| realfaces mask accuracy", "| realfaces incorrect recall"):
        assert re.search(rf"^{re.escape(row)} \| \*{{0,2}}0\.\d+", text, re.M), row
