"""Chinese word segmentation (jieba, its bundled dictionary), loaded on first Chinese message.

Chinese is written without spaces; a trigger word counts only where the segmenter puts a word
boundary, so "通过" is not found inside "通过率". jieba builds its prefix dictionary on first
use and caches it: the cache goes to a temporary directory, and nothing is downloaded.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

CJK_RUN = re.compile(r"[\u3400-\u9fff]+")

_lock = threading.Lock()
_tokenizer: Any = None


def _load(words: Iterable[str]) -> Any:
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            import jieba  # lazy: about a second to load, only a Chinese message needs it

            jieba.setLogLevel(60)
            tokenizer = jieba.Tokenizer()
            tokenizer.tmp_dir = tempfile.gettempdir()
            for word in words:
                tokenizer.add_word(word, freq=200_000)
            _tokenizer = tokenizer
    return _tokenizer


@lru_cache(maxsize=2048)
def _cut(run: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_load(vocabulary).lcut(run, HMM=False))


def boundaries(text: str, vocabulary: tuple[str, ...]) -> set[int]:
    """Offsets in `text` where a Chinese word starts or ends (plus every non-Chinese edge)."""
    edges: set[int] = {0, len(text)}
    for match in CJK_RUN.finditer(text):
        position = match.start()
        edges.add(position)
        for word in _cut(match.group(0), vocabulary):
            position += len(word)
            edges.add(position)
    return edges


def found(text: str, word: str, edges: set[int]) -> list[int]:
    """Where the Chinese `word` occurs in `text`, ending on a word boundary."""
    hits = []
    start = text.find(word)
    while start >= 0:
        # It must end where a word ends ("通过" is not in "通过率"); a modifier may come before
        # it in one word ("强制执行" still says 执行).
        if start + len(word) in edges:
            hits.append(start)
        start = text.find(word, start + 1)
    return hits
