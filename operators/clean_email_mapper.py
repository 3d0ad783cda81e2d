"""clean_email_mapper: remove (or replace) e-mail addresses in the text."""

from __future__ import annotations

import regex

from .base import Mapper
from .batch import Batch
from .clean_links_mapper import unwrap_raw
from .registry import register

# Data-Juicer's default pattern, verbatim.
DEFAULT_PATTERN = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"
# The same matches in linear time: the default pattern retries its local part from every
# character of a long run (quadratic: "a" * 10k + "@" + "a" * 10k takes seconds). A match
# can only start where such a run starts (or where the previous match ended: \G), and the
# local part never gives characters back, since '@' is not one of them.
_FAST_DEFAULT = regex.compile(
    r"(?:(?<![A-Za-z0-9.\-+_])|\G)[A-Za-z0-9.\-+_]++@[a-z0-9.\-+_]+\.[a-z]+", flags=regex.DOTALL
)


@register("clean_email_mapper")
class CleanEmailMapper(Mapper):
    """Every match of `pattern` (default: e-mail addresses) is replaced by `repl`.

    The default pattern is Data-Juicer's (its domain part is lower-case only, so
    "bob@Example.com" is left alone), run in an equivalent linear-time form. A custom `pattern` runs as given with the `regex`
    module and DOTALL; one written as r'...' or r"..." has that wrapper removed.
    """

    def __init__(self, pattern: str | None = None, repl: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.pattern = DEFAULT_PATTERN if pattern is None else unwrap_raw(pattern)
        self.repl = repl
        self._regex = (
            _FAST_DEFAULT
            if self.pattern == DEFAULT_PATTERN
            else regex.compile(self.pattern, flags=regex.DOTALL)
        )

    def process(self, batch: Batch) -> Batch:
        sub, repl = self._regex.sub, self.repl
        batch.texts = [sub(repl, text) for text in batch.texts]
        return batch
