"""clean_links_mapper: remove (or replace) links such as URLs and scheme:paths from the text."""

from __future__ import annotations

import regex

from .base import Mapper
from .batch import Batch
from .registry import register

# Data-Juicer's default pattern (from kallewesterling/CleanText), verbatim. Run by a
# backtracking engine it is quadratic or worse: `(?:[^\s()<>]+|...)+` nests two
# quantifiers over the same characters, and every word boundary inside a long run of
# `[a-z0-9.-]` or `[\w-]` rescans the run ("http://" + 16k dots: 10 s).
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

# The same language, linear: the default pattern's body and tail with one character per
# loop step (same matches, same greedy choice: the farthest end), and its prefix split
# into the three alternatives, found by anchoring on ':', 'www' and '/'.
_UNIT = r"(?:[^\s()<>]|\((?:[^\s()<>]|\([^\s()<>]+\))*\))"
_PAREN = r"\((?:[^\s()<>]|\([^\s()<>]+\))*\)"
_TAIL = r"(?:" + _PAREN + r"|[^\s`!()\[\]{};:'\".,<>?«»“”‘’])"
_BODY_TAIL = regex.compile(r"(?i)" + _UNIT + r"+" + _TAIL, flags=regex.DOTALL)
_FULL = regex.compile(
    r"(?i)\b((?:[a-z][\w-]+:(?:\/{1,3}|[a-z0-9%])|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}\/)"
    + _UNIT + r"+" + _TAIL + r")",
    flags=regex.DOTALL,
)  # fmt: skip
# Alternative 1, `[a-z][\w-]+:`: the run of [\w-] before a ':' (matched backwards from
# it); a start is a letter at the run's start or after a '-' (the run's only non-word
# character, so the only other places with a word boundary).
_SCHEME_RUN = regex.compile(r"(?r)[\w-]+")
_SCHEME_START = regex.compile(r"(?i)(?:(?<![\w-])|(?<=-))[a-z]")
_AFTER_COLON = regex.compile(r"(?i)\/{1,3}|[a-z0-9%]")
# Alternative 2, `www\d{0,3}[.]`.
_WWW = regex.compile(r"(?i)\bwww\d{0,3}[.]")
# Alternative 3, `[a-z0-9.\-]+[.][a-z]{2,4}\/`: the run of [a-z0-9.-] before a '/',
# ending in '.' and 2 to 4 letters; a start is any word boundary before that '.'.
_DOMAIN_RUN = regex.compile(r"(?ri)[a-z0-9.\-]+")
_TLD = regex.compile(r"(?ri)\.[a-z]{2,4}")
_BOUNDARY = regex.compile(r"\b")


def _positions(text: str, char: str) -> list[int]:
    out, i = [], text.find(char)
    while i >= 0:
        out.append(i)
        i = text.find(char, i + 1)
    return out


def _candidates(text: str) -> dict[int, list[int]]:
    """Start -> prefix ends, in the order the default pattern's engine tries them there."""
    alt1: dict[int, list[int]] = {}
    for colon in _positions(text, ":"):
        after = _AFTER_COLON.match(text, colon + 1)
        run = _SCHEME_RUN.match(text, 0, colon)
        if after is None or run is None:
            continue
        # `\/{1,3}` gives back slashes one at a time; `[a-z0-9%]` is one character.
        ends = list(range(after.end(), colon + 1, -1)) if text[colon + 1] == "/" else [colon + 2]
        for m in _SCHEME_START.finditer(text, run.start(), colon - 1):
            alt1[m.start()] = ends
    alt2 = {m.start(): [m.end()] for m in _WWW.finditer(text, overlapped=True)}
    alt3: dict[int, list[int]] = {}
    for slash in _positions(text, "/"):
        run = _DOMAIN_RUN.match(text, 0, slash)
        tld = _TLD.match(text, 0, slash) if run else None
        if tld is None:
            continue
        for m in _BOUNDARY.finditer(text, run.start(), tld.start()):
            if m.start() < tld.start():
                alt3[m.start()] = [slash + 1]
    starts = sorted(alt1.keys() | alt2.keys() | alt3.keys())
    return {s: alt1.get(s, []) + alt2.get(s, []) + alt3.get(s, []) for s in starts}


def remove_links(text: str, repl: str) -> str:
    """`regex.sub(DEFAULT_PATTERN, repl, text)`, in time linear in the text (roughly)."""
    if ":" not in text and "/" not in text and "www" not in text.lower():
        return text
    body_tail: dict[int, int | None] = {}  # prefix end -> match end (None: no match)
    pieces, pos = [], 0
    for start, ends in _candidates(text).items():
        if start < pos:
            continue
        for end in ends:
            if end not in body_tail:
                m = _BODY_TAIL.match(text, end)
                body_tail[end] = m.end() if m else None
            if body_tail[end] is not None:
                if "\\" in repl:  # a template (\1, \g<0>): expand it from the match
                    match = _FULL.match(text, start)
                    pieces += [text[pos:start], match.expand(repl)]
                else:
                    pieces += [text[pos:start], repl]
                pos = body_tail[end]
                break
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def unwrap_raw(pattern: str) -> str:
    """A pattern written as r'...' or r"..." in the recipe, without that wrapper (as Data-Juicer)."""
    if len(pattern) > 2 and (
        (pattern.startswith("r'") and pattern.endswith("'"))
        or (pattern.startswith('r"') and pattern.endswith('"'))
    ):
        return pattern[2:-1]
    return pattern


@register("clean_links_mapper")
class CleanLinksMapper(Mapper):
    """Every match of `pattern` (default: links) is replaced by `repl`, surrounding spaces kept.

    The default pattern is Data-Juicer's, run by an equivalent linear-time search (the
    same matches; the original takes seconds to hours on texts such as "http://"
    followed by many dots, or long dotted runs). A custom `pattern` runs as given with
    the `regex` module and DOTALL, as Data-Juicer does; one written as r'...' or
    r"..." has that wrapper removed. Note the default pattern also removes any
    `word:xyz...` with three or more characters after the colon (e.g. "lang:eng").
    """

    def __init__(self, pattern: str | None = None, repl: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.pattern = DEFAULT_PATTERN if pattern is None else unwrap_raw(pattern)
        self.repl = repl
        self._regex = regex.compile(self.pattern, flags=regex.DOTALL)

    def process(self, batch: Batch) -> Batch:
        repl = self.repl
        if self.pattern == DEFAULT_PATTERN:
            batch.texts = [remove_links(text, repl) for text in batch.texts]
        else:
            sub = self._regex.sub
            batch.texts = [sub(repl, text) for text in batch.texts]
        return batch
