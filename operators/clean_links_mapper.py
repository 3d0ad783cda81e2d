"""clean_links_mapper: remove (or replace) links such as URLs and scheme:paths from the text."""

from __future__ import annotations

import regex

from .base import Mapper
from .batch import Batch
from .registry import register

# Data-Juicer's default pattern (from kallewesterling/CleanText), verbatim.
DEFAULT_PATTERN = (
    r"(?i)\b("
    r"(?:[a-z][\w-]+:(?:\/{1,3}|"
    r"[a-z0-9%])|www\d{0,3}[.]|"
    r"[a-z0-9.\-]+[.][a-z]{2,4}\/)"
    r"(?:[^\s()<>]+|\(([^\s()<>]+|"
    r"(\([^\s()<>]+\)))*\))"
    r"+(?:\(([^\s()<>]+|(\([^\s()<>]+\)))*\)|"
    r"[^\s`!()\[\]{};:\'\".,<>?«»“”‘’])"
    r")"
)


@register("clean_links_mapper")
class CleanLinksMapper(Mapper):
    """Every match of `pattern` (default: links) is replaced by `repl`, surrounding spaces kept.

    Uses the third-party `regex` module with DOTALL, as Data-Juicer does (the
    stdlib `re` backtracks exponentially on this pattern for inputs such as
    "http://" followed by many dots). A custom `pattern` written as r'...' or
    r"..." has that wrapper removed. Note the default pattern also removes any
    `word:xyz...` with three or more characters after the colon (e.g. "lang:eng").
    """

    def __init__(self, pattern: str | None = None, repl: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        if pattern is None:
            self.pattern = DEFAULT_PATTERN
        else:
            self.pattern = pattern
            if len(pattern) > 2 and (
                (pattern.startswith("r'") and pattern.endswith("'"))
                or (pattern.startswith('r"') and pattern.endswith('"'))
            ):
                self.pattern = pattern[2:-1]
        self.repl = repl
        self._regex = regex.compile(self.pattern, flags=regex.DOTALL)

    def process(self, batch: Batch) -> Batch:
        sub, repl = self._regex.sub, self.repl
        batch.texts = [sub(repl, text) for text in batch.texts]
        return batch
