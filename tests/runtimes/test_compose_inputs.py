"""What a compose render reads: the cache key of the rendered config (no engine needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from runtimes.compose_inputs import MAX_FILES, render_inputs, render_key


def _write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


def test_inputs_follow_include_extends_and_env_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "base.yaml", {"services": {"b": {"env_file": "base.env"}}})
    _write(tmp_path / "inc.yaml", {"services": {"i": {"label_file": ["l.txt"]}}})
    main = _write(
        tmp_path / "compose.yaml",
        {
            "include": ["inc.yaml", {"path": ["missing.yaml"], "env_file": ["inc.env"]}],
            "services": {
                "web": {
                    "env_file": [{"path": "web.env", "required": False}],
                    "extends": {"file": "sub/base.yaml", "service": "b"},
                },
                "odd": "not a mapping",
            },
        },
    )
    found = set(render_inputs([main]) or [])
    expected = {"compose.yaml", "inc.yaml", "missing.yaml", "inc.env", "web.env", ".env"}
    assert {tmp_path / name for name in expected} | {tmp_path / "sub" / "base.env"} <= found
    assert tmp_path / "sub" / "base.yaml" in found and tmp_path / "l.txt" in found


def test_key_changes_with_any_input_even_at_the_same_size_and_time(tmp_path: Path) -> None:
    env = tmp_path / "web.env"
    env.write_text("MODE=a\n")
    main = _write(tmp_path / "compose.yaml", {"services": {"web": {"env_file": "web.env"}}})
    before, stamp = render_key([main]), env.stat().st_mtime_ns
    env.write_text("MODE=b\n")
    os.utime(env, ns=(stamp, stamp))
    assert render_key([main]) not in {None, before}
    edited = render_key([main])
    (tmp_path / ".env").write_text("X=1\n")  # created: the project's .env counts too
    with_dotenv = render_key([main])
    assert with_dotenv not in {None, edited}
    assert render_key([main]) == with_dotenv  # equal inputs, equal key


def test_environment_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = _write(tmp_path / "compose.yaml", {"services": {"web": {"image": "w:${TAG}"}}})
    monkeypatch.setenv("TAG", "1")
    one = render_key([main])
    monkeypatch.setenv("TAG", "2")
    assert render_key([main]) != one


@pytest.mark.parametrize(
    "document",
    [
        {"services": {"web": {"env_file": "${WHERE}/web.env"}}},
        {"include": ["$OTHER.yaml"]},
        ["a", "list"],
        "just text",
    ],
    ids=["variable-env-file", "variable-include", "list", "scalar"],
)
def test_unknowable_inputs_are_rendered_every_time(tmp_path: Path, document: object) -> None:
    assert render_key([_write(tmp_path / "compose.yaml", document)]) is None


def test_broken_yaml_and_empty_lists_are_not_cached(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  web: [not, closed\n")
    assert render_key([broken]) is None
    assert render_key([]) is None


def test_cycles_and_huge_webs_terminate(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"services": {"a": {"extends": {"file": "b.yaml"}}}})
    _write(tmp_path / "b.yaml", {"services": {"b": {"extends": {"file": "a.yaml"}}}})
    assert render_key([tmp_path / "a.yaml"]) is not None
    chain = [f"f{i}.yaml" for i in range(MAX_FILES + 5)]
    for name, following in zip(chain, chain[1:], strict=False):
        _write(tmp_path / name, {"include": [following]})
    assert render_key([tmp_path / chain[0]]) is None


def test_hostile_names_are_just_paths(tmp_path: Path) -> None:
    name = "🚀" * 20 + ".env"
    long = "x" * 10_000
    main = _write(
        tmp_path / "compose.yaml", {"services": {"web": {"env_file": [name, long, 42, None]}}}
    )
    found = render_inputs([main]) or []
    assert tmp_path / name in found and tmp_path / long in found
    assert render_key([main]) is None  # unreadable (name too long): compose says why, uncached
    main = _write(tmp_path / "compose.yaml", {"services": {"web": {"env_file": [name, 42]}}})
    assert render_key([main]) is not None
