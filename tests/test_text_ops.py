"""Text filters and mappers: Data-Juicer's stats formulas and outputs, on worked examples."""

from __future__ import annotations

import inspect
import sys

import pytest
from helpers import run_op

from dj_synth.operators import Batch, SampleRef, get_operator


def texts_of(out: Batch) -> list[str]:
    return list(out.texts)


def stat(name: str, texts: list[str], key: str, **args) -> list:
    """The stat for each text (nothing dropped: read from the op's compute_stats)."""
    op = get_operator(name)(**args)
    batch = Batch.from_rows(
        [{"text": t} for t in texts], [SampleRef(i, "t", i) for i in range(len(texts))]
    )
    op.compute_stats(batch)
    return [s[key] for s in batch.stats]


def mapped(name: str, texts: list[str], **args) -> list[str]:
    out, _ = run_op(name, [{"text": t} for t in texts], **args)
    return texts_of(out)


def defaults(name: str) -> dict:
    params = inspect.signature(get_operator(name).__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def test_data_juicer_signatures():
    # sp_model and hf_tokenizer are ours (Data-Juicer finds its models by fixed names)
    assert defaults("words_num_filter") == {
        "lang": "en", "tokenization": False, "min_num": 10, "max_num": sys.maxsize,
        "sp_model": None,
    }  # fmt: skip
    assert defaults("special_characters_filter") == {"min_ratio": 0.0, "max_ratio": 0.25}
    assert defaults("alphanumeric_filter") == {
        "tokenization": False, "min_ratio": 0.25, "max_ratio": sys.maxsize,
        "hf_tokenizer": "EleutherAI/pythia-6.9b-deduped",
    }  # fmt: skip
    assert defaults("character_repetition_filter") == {
        "rep_len": 10, "min_ratio": 0.0, "max_ratio": 0.5,
    }  # fmt: skip
    assert defaults("language_id_score_filter") == {"lang": "", "min_score": 0.8}
    assert defaults("clean_links_mapper") == {"pattern": None, "repl": ""}
    assert defaults("fix_unicode_mapper") == {"normalization": None}
    for name in ("clean_html_mapper", "whitespace_normalization_mapper",
                 "punctuation_normalization_mapper"):  # fmt: skip
        assert defaults(name) == {}


# -- words_num_filter ---------------------------------------------------------


def test_words_num_worked_examples():
    texts = [
        "Today is Sunday and it's a happy day!",
        "a , b --- c\xa0d\r\ne 123 😀",  # only ' ', '\n', '\t' split; all-special words drop
        "...",
        "中文没有空格。",
        "",
        "a\u2003b c\u3000d\tx\n\ny",  # U+2003 / U+3000 are special but do not split
        "(hello) [world]!! 42nd",
    ]
    assert stat("words_num_filter", texts, "num_words") == [8, 4, 0, 1, 0, 4, 3]


def test_words_num_boundaries_and_reversed_range():
    rows = [{"text": "one two three"}, {"text": "one two"}, {"text": "one two three four"}]
    out, ledger = run_op("words_num_filter", rows, min_num=2, max_num=3)
    assert texts_of(out) == ["one two three", "one two"]
    assert out.stats[0]["num_words"] == 3
    out, _ = run_op("words_num_filter", rows, min_num=2, max_num=3, max_closed_interval=False)
    assert texts_of(out) == ["one two"]
    # reversed_range keeps the outside, endpoints included (Data-Juicer's flag flip)
    out, _ = run_op("words_num_filter", rows, min_num=3, max_num=4, reversed_range=True)
    assert texts_of(out) == ["one two three", "one two", "one two three four"]
    out, _ = run_op("words_num_filter", rows, min_num=2, max_num=4, reversed_range=True)
    assert texts_of(out) == ["one two", "one two three four"]
    # default min_num=10 drops short and empty text
    out, ledger = run_op("words_num_filter", [{"text": ""}, {"text": "w " * 10}])
    assert texts_of(out) == ["w " * 10] and ledger.op(0).filtered == 1


# -- special_characters_filter ------------------------------------------------


def test_special_char_ratio_values():
    texts = [
        "ab!1",  # 2/4
        "a😀",  # emoji are special
        "一上士ンa",  # Data-Juicer's list includes these CJK / Katakana characters
        "a\xa0b\u2581",  # NBSP and U+2581 are not special
        "",
        "\u200b\ufeff\xad x",  # zero-width space, BOM, soft hyphen, space: 4/5
        "👍🏽",  # skin-tone modifier U+1F3FD is itself an emoji code point
        "❤️",  # U+2764 is, U+FE0F is not
    ]
    assert stat("special_characters_filter", texts, "special_char_ratio") == [
        0.5, 0.5, 0.8, 0.0, 0.0, 0.8, 1.0, 0.5,
    ]  # fmt: skip


def test_special_chars_set_matches_data_juicer():
    from dj_synth.operators.special_characters_filter import SPECIAL_CHARACTERS

    assert len(SPECIAL_CHARACTERS) == 1618
    assert set("0123456789 \t\n\r\x0b\x0c!?@~") <= SPECIAL_CHARACTERS
    assert "\xa0" not in SPECIAL_CHARACTERS and "a" not in SPECIAL_CHARACTERS
    assert {"\U0001faf8", "\xa9", "\x85", "\u2581"} & SPECIAL_CHARACTERS == {
        "\U0001faf8", "\xa9", "\x85",
    }  # fmt: skip


def test_special_chars_keep_boundaries():
    rows = [{"text": "abc!"}, {"text": "ab!!"}, {"text": "abcd"}, {"text": ""}]
    out, _ = run_op("special_characters_filter", rows)  # [0, 0.25]
    assert texts_of(out) == ["abc!", "abcd", ""]
    out, _ = run_op("special_characters_filter", rows, min_ratio=0.0, max_ratio=0.25,
                    min_closed_interval=False)  # fmt: skip
    assert texts_of(out) == ["abc!"]


# -- alphanumeric_filter ------------------------------------------------------


def test_alnum_ratio_values():
    texts = ["ab_ !", "中文é1", "", "١٢٣x", "..a", "½²"]
    # '_' is not alnum; CJK, accented letters, Arabic-Indic digits, '½' and '²' are
    assert stat("alphanumeric_filter", texts, "alnum_ratio") == [0.4, 1.0, 0.0, 1.0, 1 / 3, 1.0]


def test_alnum_keep():
    rows = [{"text": "a..."}, {"text": "a.."}, {"text": ""}, {"text": "...."}]
    out, _ = run_op("alphanumeric_filter", rows)  # [0.25, maxsize]
    assert texts_of(out) == ["a...", "a.."]
    out, _ = run_op("alphanumeric_filter", rows, min_ratio=0.25, min_closed_interval=False)
    assert texts_of(out) == ["a.."]
    # tokenization: true (stat alpha_token_ratio): tests/test_dj_text_ops.py


# -- character_repetition_filter ----------------------------------------------


def test_char_rep_ratio_values():
    pangram = "The quick brown fox jumps over the lazy dog"
    texts = ["a" * 20, "abc" * 7, "short", pangram, "", "a" * 10]
    # "abc"*7: 12 ten-grams, 3 distinct x4 each; top floor(sqrt(3)) = 1 -> 4/12.
    # "a"*10: one ten-gram seen once; only repeated n-grams count -> 0.0
    assert stat("character_repetition_filter", texts, "char_rep_ratio") == [
        1.0, 4 / 12, 0.0, 0.0, 0.0, 0.0,
    ]  # fmt: skip
    # rep_len=2 on "abab" + "cdefgh": bigrams ab x2, ba, bc, cd, de, ef, fg, gh (D=8)
    # top floor(sqrt(8)) = 2 but only 1 repeats -> 2/9
    assert stat("character_repetition_filter", ["ababcdefgh"], "char_rep_ratio", rep_len=2) == [
        2 / 9
    ]
    # "aaaaabbbb" bigrams aa x4, bb x3, ab x1: D=3, k = min(floor(sqrt(3)), 2) = 1
    assert stat("character_repetition_filter", ["aaaaabbbb"], "char_rep_ratio", rep_len=2) == [
        4 / 8
    ]


def test_char_rep_keep_and_args():
    rows = [{"text": "a" * 20}, {"text": "abc" * 7}, {"text": "x"}]
    out, ledger = run_op("character_repetition_filter", rows)  # [0, 0.5]
    assert texts_of(out) == ["abc" * 7, "x"]
    assert "char_rep_ratio=1" in ledger.filtered[0].reason
    out, _ = run_op("character_repetition_filter", rows, max_ratio=1 / 3)
    assert texts_of(out) == ["abc" * 7, "x"]
    with pytest.raises(ValueError):
        get_operator("character_repetition_filter")(rep_len=0)


# -- language_id_score_filter -------------------------------------------------

EN = "This is a simple sentence written in English about a dog in the park."
DE = "Das ist ein einfacher Satz, der auf Deutsch geschrieben wurde."
ZH = "这是一个用中文写的简单句子。"


def test_lang_id_stats_and_lang_constraint():
    rows = [{"text": EN}, {"text": DE}, {"text": ZH}]
    out, _ = run_op("language_id_score_filter", rows)
    assert [s["lang"] for s in out.stats] == ["en", "de", "zh"]
    assert all(0.9 < s["lang_score"] <= 1.0 for s in out.stats)
    assert all(type(s["lang_score"]) is float for s in out.stats)
    out, ledger = run_op("language_id_score_filter", rows, lang="en")
    assert texts_of(out) == [EN] and ledger.op(0).filtered == 2
    assert "lang='de'" in ledger.filtered[0].reason
    out, _ = run_op("language_id_score_filter", rows, lang=["zh", "de"])
    assert texts_of(out) == [DE, ZH]
    out, _ = run_op("language_id_score_filter", rows, lang=[])  # falsy: score test only
    assert len(out) == 3


def test_lang_id_matches_langid_and_score_boundary():
    from langid.langid import LanguageIdentifier, model

    ref = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    texts = [EN, "Bonjour, je m'appelle Marie.\nJ'habite à Paris.", "", "123", ZH, "ok"]
    langs = stat("language_id_score_filter", texts, "lang")
    scores = stat("language_id_score_filter", texts, "lang_score")
    for text, lang, score in zip(texts, langs, scores):
        want = ref.classify(text.lower().replace("\n", " "))
        assert lang == want[0] and score == pytest.approx(want[1], abs=1e-12)
    # the lower bound only; closed unless min_closed_interval=False
    rows = [{"text": "ok"}]
    (score,) = stat("language_id_score_filter", ["ok"], "lang_score")
    assert score < 0.8
    assert len(run_op("language_id_score_filter", rows)[0]) == 0
    assert len(run_op("language_id_score_filter", rows, min_score=score)[0]) == 1
    kw = {"min_score": score, "min_closed_interval": False}
    assert len(run_op("language_id_score_filter", rows, **kw)[0]) == 0
    # reversed_range negates the score test (keeps low-confidence samples)
    assert len(run_op("language_id_score_filter", rows, reversed_range=True)[0]) == 1


def test_lang_id_strips_special_tokens_and_classifies_once(monkeypatch):
    import dj_synth.operators.language_id_score_filter as mod

    calls = []
    real = mod._model()

    class Spy:
        def classify(self, text):
            calls.append(text)
            return real.classify(text)

    monkeypatch.setattr(mod, "_model", lambda: Spy())
    rows = [{"text": "<__dj__image>\nA Dog<|__dj__eoc|>"}, {"text": "Zwei Hunde"}]
    run_op("language_id_score_filter", rows, min_score=0.0)
    assert calls == ["  a dog ", "zwei hunde"]
    calls.clear()
    run_op("language_id_score_filter", [{"text": "[IMG] x"}], image_special_token="[IMG]")
    assert calls == ["  x"]


# -- clean_html_mapper --------------------------------------------------------


def test_clean_html_worked_examples():
    cases = {
        "<p>Hello</p><p>World</p>": "HelloWorld",
        "<div>a<br>b</div>": "ab",
        "<ul><li>a</li><li>b</li></ul>": "\n*a\n*b",
        "<ol><li>x</li></ol>": "*\n*x",
        "  a  <b>b</b> ": "a  b ",
        "a < b": "a < b",
        "x &amp; y": "x & y",
        "<script>var x=1;</script>hi": "var x=1;hi",
        "<title>T</title><body>B</body>": "TB",
        "<LI>up": "up",  # only the exact lowercase tag gets a bullet
        "": "",
        "plain text": "plain text",
    }
    assert mapped("clean_html_mapper", list(cases)) == list(cases.values())


def test_clean_html_non_str_passthrough():
    out, ledger = run_op("clean_html_mapper", [{"text": None}, {"text": "<i>x</i>"}])
    assert texts_of(out) == [None, "x"] and not ledger.quarantined


# -- clean_links_mapper -------------------------------------------------------


def test_clean_links_worked_examples():
    cases = {
        "visit https://www.example.com/path?q=1. now": "visit . now",
        "mail mailto:a@b.com please": "mail  please",
        "see www.abc.com, ok": "see , ok",
        "example.com/foo bar": " bar",
        "http://a.b/(x)": "",
        "a:b and lang:en stay": "a:b and lang:en stay",
        "lang:eng goes": " goes",  # the scheme branch quirk
        "two http://x.io/a and ftp://y.org/b": "two  and ",
        "": "",
    }
    assert mapped("clean_links_mapper", list(cases)) == list(cases.values())


def test_clean_links_custom_pattern_and_repl():
    out = mapped("clean_links_mapper", ["go to www.x.com now"], repl="<LINK>")
    assert out == ["go to <LINK> now"]
    out = mapped("clean_links_mapper", ["a1b22c"], pattern=r"r'\d+'", repl="#")
    assert out == ["a#b#c"]
    out = mapped("clean_links_mapper", ["r'x' r'xx'"], pattern="r'")  # too short to unwrap
    assert out == ["x' xx'"]


def test_clean_links_no_catastrophic_backtracking():
    text = "http://" + "." * 5000 + " tail"
    assert mapped("clean_links_mapper", [text]) == [text]


# -- fix_unicode_mapper -------------------------------------------------------


def test_fix_unicode_worked_examples():
    cases = {
        "âœ” No problems": "✔ No problems",
        "ﬁ": "fi",
        "Ｈｅｌｌｏ": "Hello",
        "“hi” ‘x’": "\"hi\" 'x'",
        "&amp;": "&",
        "&amp; <b>": "&amp; <b>",
        "\x1b[31mred": "red",
        "a\r\nb": "a\nb",
        "a\xa0b—c": "a\xa0b—c",
        "e\u0301": "é",  # NFC
        "plain ascii\ttext\n": "plain ascii\ttext\n",
        "": "",
    }
    assert mapped("fix_unicode_mapper", list(cases)) == list(cases.values())


def test_fix_unicode_normalization_arg():
    assert mapped("fix_unicode_mapper", ["é"], normalization="nfkd") == ["e\u0301"]
    assert mapped("fix_unicode_mapper", ["x²"], normalization="NFKC") == ["x2"]
    assert mapped("fix_unicode_mapper", ["x²"]) == ["x²"]
    with pytest.raises(ValueError, match="NFC"):
        get_operator("fix_unicode_mapper")(normalization="nfx")


# -- whitespace_normalization_mapper -------------------------------------------


def test_whitespace_normalization_examples():
    cases = {
        "\u3000 a\u2003b\nc\td\u200b ": "a b\nc d ",  # trailing U+200B survives strip
        "\t a\t\tb  \n": "a  b",  # runs are not collapsed
        "a\x84b\x85c\u2028d": "a b\x85c\u2028d",  # U+0084 is in the set, U+0085 is not
        "x\u00a0\u2060\ufffcy": "x   y",
        "": "",
        " \n\t ": "",
    }
    assert mapped("whitespace_normalization_mapper", list(cases)) == list(cases.values())


# -- punctuation_normalization_mapper ------------------------------------------


def test_punctuation_normalization_examples():
    cases = {
        "你好，世界。": "你好,世界.",
        "“引号”《书》「x」": '"引号""书""x"',
        "a—b．c…": "a - b. c...",
        "１２": '"２',  # Data-Juicer maps FULLWIDTH DIGIT ONE to '"'
        "‘it’s’": "‘it's'",  # only U+2019 is mapped
        "【％】►━〈〉～´∶": "[%]--<>~':",
        "plain, ascii.": "plain, ascii.",
        "": "",
    }
    assert mapped("punctuation_normalization_mapper", list(cases)) == list(cases.values())
