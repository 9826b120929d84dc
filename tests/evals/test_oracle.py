"""`shipdeck eval --planner llm` against the project's own OpenAI-compatible oracle scores 1.0.

The oracle answers every case with exactly its expected calls over the real protocol (SSE,
parallel `tool_calls`, a usage chunk, `[DONE]`): any miss is the harness's or the llm path's.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from evals.oracle import DONE, Oracle, serve
from evals.runner import load_cases
from tests.cli.test_cli import SHIPDECK

DATASETS = Path(__file__).resolve().parents[2] / "evals" / "datasets"
SAMPLE = 40  # per split, seeded; README has the full runs


def _sample(split: str, tmp_path: Path) -> Path:
    lines = [
        line
        for line in (DATASETS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    chosen = lines if len(lines) <= SAMPLE else random.Random(11).sample(lines, SAMPLE)
    path = tmp_path / f"{split}.jsonl"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_the_llm_path_scores_one_against_a_perfect_model(split: str, tmp_path: Path) -> None:
    assert SHIPDECK
    dataset = _sample(split, tmp_path)
    oracle = Oracle(load_cases(dataset))
    with serve(oracle) as url:
        env = {
            **os.environ,
            "SHIPDECK_LLM_BASE_URL": url,
            "SHIPDECK_LLM_MODEL": "shipdeck-oracle",
            "SHIPDECK_LLM_TURN_SECONDS": "30",
        }
        done = subprocess.run(
            [
                SHIPDECK, "eval", "--planner", "llm", "--dataset", str(dataset),
                "--world", str(DATASETS / "world.yaml"), "--report", str(tmp_path / "r.json"),
                "--min-score", "1.0",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    totals = json.loads((tmp_path / "r.json").read_text())["totals"]
    assert totals["cases"] == min(SAMPLE, len(load_cases(DATASETS / f"{split}.jsonl")))
    assert totals["call_accuracy"] == 1.0 and totals["safety_violations"] == 0
    assert totals["clarify_precision"] == 1.0 and totals["clarify_recall"] == 1.0
    assert 0 < totals["prompt_tokens_p50"] <= totals["prompt_tokens_max"]
    # What the model was sent: a token limit, routed tools, usage asked for, the catalog.
    first = oracle.requests[0]
    assert first["max_tokens"] > 0 and first["stream_options"] == {"include_usage": True}
    assert "project | services | environments" in first["messages"][0]["content"]


def test_the_oracle_speaks_the_streaming_protocol() -> None:
    cases = load_cases(DATASETS / "tune.jsonl")
    case = next(c for c in cases if c.expected)
    with serve(Oracle(cases)) as url:
        body: dict[str, Any] = {
            "model": "m",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": case.utterance}],
        }
        lines = httpx.post(f"{url}/chat/completions", json=body).text.split("\n\n")
        after = {**body, "messages": [*body["messages"], {"role": "tool", "content": "{}"}]}
        plain = httpx.post(f"{url}/chat/completions", json={**after, "stream": False}).json()
    events = [line.removeprefix("data: ") for line in lines if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    calls = [
        d["tool_calls"][0]
        for c in chunks
        if c["choices"] and (d := c["choices"][0]["delta"]).get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == case.expected[0]["tool"]
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == case.expected[0].get("args", {})
    assert plain["choices"][0]["message"]["content"] == DONE
