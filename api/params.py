"""Path parameters shared by the routes, with the patterns the tools accept."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from core.ids import RELEASE_ID
from tools.inputs import NAME

ReleasePath = Annotated[
    str,
    Path(
        pattern=RELEASE_ID,
        max_length=24,
        description="Release id: `R-42` (also `r42` or `42`).",
        examples=["R-42"],
    ),
]
ProjectPath = Annotated[
    str, Path(pattern=NAME, description="Project name, e.g. shop.", examples=["shop"])
]
EnvironmentPath = Annotated[
    str, Path(pattern=NAME, description="Environment, e.g. prod.", examples=["prod"])
]
