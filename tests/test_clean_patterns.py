"""clean_links_mapper and clean_html_mapper: Data-Juicer's output, without its quadratic cases.

Timing asserts are generous (busy 2-core CI): each input is one where Data-Juicer's
code takes minutes or more, and ours well under a second on an idle machine.
"""

from __future__ import annotations

import random
import time

import regex
from helpers import run_op
from selectolax.lexbor import LexborHTMLParser

from dj_synth.operators.clean_html_mapper import clean_html, flatten_deep_nesting
from dj_synth.operators.clean_links_mapper import DEFAULT_PATTERN, remove_links


def _links(texts: list[str], **args) -> list[str]:
    out, _ = run_op("clean_links_mapper", [{"text": t} for t in texts], **args)
    return [r["text"] for r in out.rows()]


def test_links_worked_examples():
    texts = [
        "visit https://example.com/path?q=1 now",
        "see www.example.org.",  # the final '.' is not part of the link
        "mail: lang:eng stays?",  # "mail:" + space is no link; "lang:eng" is one
        "(http://a.com/x_(y))",  # balanced parentheses belong to the link
        "docs at example.co.uk/ab, then",
        "short example.co.uk/a, kept",  # a link needs 2 characters after its prefix
        "no links here: 3:45 and a/b",
    ]
    assert _links(texts) == [
        "visit  now", "see .", "mail:  stays?", "()", "docs at , then",
        "short example.co.uk/a, kept",
        "no links here: 3:45 and a/b",
    ]  # fmt: skip
    assert _links(texts[:1], repl="<URL>") == ["visit <URL> now"]
    assert _links(["x http://a.bc y"], repl="[\\1]") == ["x [http://a.bc] y"]


def test_links_same_output_as_data_juicer_pattern():
    """Random strings of the characters the pattern cares about, against the pattern itself."""
    slow = regex.compile(DEFAULT_PATTERN, flags=regex.DOTALL)
    rng = random.Random(11)
    alphabet = list("aAwW:/.-(%)<> \n1_!,?é\u017f\u212a") + [
        "www", "http", "com", "ab", "://", "(x)", "www.", "org/",
    ]  # fmt: skip
    for _ in range(6000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        for repl in ("", "<L>", "[\\1]"):
            assert remove_links(text, repl) == slow.sub(repl, text), (text, repl)


def test_links_linear_on_pathological_inputs():
    cases = [
        "http://" + "." * 200_000,  # Data-Juicer: 9.6 s at 16k dots, quadratic
        "a." * 100_000 + "/",  # every 'a' starts a domain that never ends in '.tld/'
        "a-" * 100_000 + ":/",  # every 'a' starts a scheme
        "http://x(" + "a" * 200_000,  # an unclosed parenthesis
    ]
    start = time.perf_counter()
    out = _links(cases)
    assert time.perf_counter() - start < 5
    assert out == [cases[0], cases[1], cases[2], "(" + "a" * 200_000]


# -- clean_html_mapper --------------------------------------------------------------


def _html(texts: list[str]) -> list[str]:
    out, _ = run_op("clean_html_mapper", [{"text": t} for t in texts])
    return [r["text"] for r in out.rows()]


def test_html_worked_examples():
    texts = [
        "<p>Hello <b>world</b> &amp; you</p><ul><li>one</li><li>two</li></ul>",
        "<script>var a='<div>';</script>x<!-- <b>hidden</b> -->y",
        "<ol><li>a</li></ol><br>b<div>c</div>",
        "plain & simple",
    ]
    assert _html(texts) == [
        "Hello world & you\n*one\n*two",  # <li> -> "\n*" before parsing
        "var a='<div>';xy",  # script text kept, comments dropped
        "*\n*abc",  # the "\n" before any tag is dropped (HTML5's initial insertion mode)
        "plain & simple",
    ]


def test_html_deep_nesting_is_linear():
    n = 50_000  # Data-Juicer (lexbor alone): 18 s on the 2-core dev box at load 6; quadratic
    texts = ["<div>" * n + "x" + "</div>" * n, "<p><div>" * n + "y", "<div><span>a</span>" * n]
    start = time.perf_counter()
    out = _html(texts)
    assert time.perf_counter() - start < 5
    assert out == ["x", "y", "a" * n]


def test_flattening_keeps_the_text():
    """Below the depth cap, dropping the deep tags changes nothing lexbor extracts."""
    frags = [
        "<div>", "</div>", "<span>", "</span>", "<p>", "</p>", "<b>", "</b>", "<i>", "</i>",
        "<a href='x>y'>", "</a>", "text", " ", "\n", "&amp;", "<!-- <div> -->",
        "<script>var a='<div>';</script>", "<br>", "<img src=x>", "<pre>\n", "</pre>",
        "<title>t<b></title>", "<ul>", "</ul>", "<h1>", "</h1>", "<section>", "</section>",
        "<font color=red>", "</font>", "<div/>", "<DIV>", "</DIV>", "x<y", "a>b",
    ]  # fmt: skip
    rng = random.Random(5)
    cut = 0
    for _ in range(1500):
        doc = "<body>" + "".join(rng.choice(frags) for _ in range(rng.randint(1, 30)))
        for depth in (1, 2, 4):
            flat = flatten_deep_nesting(doc, depth)
            cut += flat != doc
            assert LexborHTMLParser(flat).text() == LexborHTMLParser(doc).text(), (doc, depth)
    assert cut > 1000  # the comparison exercised the flattening
    deep = "<div>a" * 3000 + "</div>" * 3000
    assert clean_html(deep) == "a" * 3000 == LexborHTMLParser(deep).text()
