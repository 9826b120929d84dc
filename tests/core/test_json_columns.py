"""JSON columns are read by pydantic-core's parser: the same values the standard parser gives."""

from __future__ import annotations

import json
import math

from core.db import json_loads

DOCUMENTS = [
    '{"web": {"image": {"before": "p/web:1", "after": "p/web:1.100.0"}}}',
    '[{"group": "owners", "count": 1}]',
    '{"a": 1, "a": 2}',  # the last duplicate wins, as in json.loads
    "123456789012345678901234567890",
    "[0.1, -0.0, 1e400, 1.7976931348623157e308, 1.5e-320, 12345678901234567.5]",
    '"\\ud83d\\ude80 \\u754c"',
    '"' + "界" * 10_000 + '"',
    '"\\ud800"',  # a lone surrogate: pydantic-core refuses it, the standard parser reads it
    '{"nested": [[[[{"x": null, "y": true, "z": false}]]]]}',
]


def test_json_columns_parse_as_the_standard_parser_does() -> None:
    for document in DOCUMENTS:
        for given in (document, document.encode()):
            assert json_loads(given) == json.loads(document), document[:40]
    assert json_loads('"\\ud800"') == "\ud800"
    assert math.isnan(json_loads("NaN"))
    assert type(json_loads("1.0")) is float and type(json_loads("10")) is int
