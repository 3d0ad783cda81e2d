"""Data-Juicer's common text operators (issue 18): worked examples derived by hand.

Word filters split on ' ', '\\n', '\\t', lower-case, strip Data-Juicer's special
characters from word ends and drop empty words (Data-Juicer's helper_func.py).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import time

import pytest
import regex
from helpers import run_op

from dj_synth.operators import get_operator
from dj_synth.operators.clean_copyright_mapper import clean_copyright
from dj_synth.operators.clean_email_mapper import DEFAULT_PATTERN as EMAIL
from dj_synth.operators.models import ModelNotFoundError
from dj_synth.operators.word_lists import load_word_lists
from dj_synth.operators.words import refine_words, split_words


def stat(name: str, texts: list[str], key: str, **args) -> tuple[list, list[str]]:
    """Stats of every text (keep rule off) and the texts the operator keeps with `args`."""
    op = get_operator(name)(**args)
    from dj_synth.operators import Batch, SampleRef

    batch = Batch.from_rows(
        [{"text": t} for t in texts], [SampleRef(i, "t", i) for i in range(len(texts))]
    )
    op.compute_stats(batch)
    values = [s[key] for s in batch.stats]
    kept, _ = run_op(name, [{"text": t} for t in texts], **args)
    return values, [r["text"] for r in kept.rows()]


# -- words ------------------------------------------------------------------------


def test_words_split_and_refine_as_data_juicer():
    assert split_words("Hello,  WORLD!\tfoo\nbar --\r\nx") == [
        "Hello,", "WORLD!", "foo", "bar", "--\r", "x",
    ]  # fmt: skip
    # '\r' is special (stripped); "--" becomes empty and is dropped
    assert refine_words(split_words("Hello,  WORLD!\tfoo\nbar --\r\nx")) == [
        "hello", "world", "foo", "bar", "x",
    ]  # fmt: skip
    # lower-case first, then strip: Cyrillic capital Ghe is special, its lower case is not
    assert refine_words(["1Г"]) == ["г"]
    augmented = ["a", "b", "c", "a_b", "b_c", "a_b_c"]
    assert refine_words(["a", "b", "c"], True, [2, 3], "_") == augmented


# -- word_repetition_filter --------------------------------------------------------


def test_word_repetition_ratio_worked_examples():
    texts = [
        "a b a b a b",  # "a b" x3, "b a" x2: all repeated -> 5/5
        "The cat, the CAT sat.",  # the cat | cat the | the cat | cat sat -> 2/4
        "one two",  # fewer words than... no: 1 bigram, seen once -> 0
        "a --- b",  # "---" is not a word: "a b" once -> 0
        "x",  # no bigram -> 0
    ]
    values, kept = stat("word_repetition_filter", texts, "word_rep_ratio", rep_len=2)
    assert values == [1.0, 0.5, 0.0, 0.0, 0.0]
    assert kept == texts[1:]  # default max_ratio 0.5, closed interval


def test_word_repetition_default_rep_len_10():
    words = "a b c d e f g h i j"
    values, _ = stat("word_repetition_filter", [words + " " + words], "word_rep_ratio")
    # 20 words -> 11 ten-grams; "a .. j" occurs twice, the 9 others once -> 2/11
    assert values == [2 / 11]
    # digits are special characters: "w0".."w9" all refine to "w", one repeated ten-gram
    words = " ".join(f"w{i}" for i in range(10))
    values, _ = stat("word_repetition_filter", [words + " " + words], "word_rep_ratio")
    assert values == [1.0]


# -- flagged_words_filter / stopwords_filter ----------------------------------------


@pytest.fixture
def word_dir(tmp_path):
    d = tmp_path / "lists"
    d.mkdir()
    (d / "flagged_words.json").write_text(json.dumps({"en": ["badword"], "zh": ["坏词"]}))
    (d / "flagged_words_extra.json").write_text(json.dumps({"en": ["worse"]}))
    (d / "other.json").write_text(json.dumps({"en": ["cat"]}))  # not a flagged_words file
    (d / "stopwords.json").write_text(json.dumps({"en": ["the", "is"]}))
    return str(d)


def test_flagged_words_ratio_with_data_juicer_files(word_dir):
    texts = ["This BADWORD is worse!", "a cat", "", "badword"]
    values, kept = stat(
        "flagged_words_filter", texts, "flagged_words_ratio", flagged_words_dir=word_dir
    )
    # files merged per language ("worse" from the second file); other.json ignored
    assert values == [2 / 4, 0.0, 0.0, 1.0]
    assert kept == ["a cat", ""]  # default max_ratio 0.045


def test_flagged_words_augmentation_for_chinese(word_dir):
    # words 这是 / 坏 / 词 plus the joined pairs 这是坏 / 坏词: 1 of 5 is flagged
    values, _ = stat(
        "flagged_words_filter", ["这是 坏 词"], "flagged_words_ratio", lang="zh",
        flagged_words_dir=word_dir, use_words_aug=True,
    )  # fmt: skip
    assert values == [1 / 5]
    values, _ = stat(
        "flagged_words_filter", ["这是 坏 词"], "flagged_words_ratio", lang="zh",
        flagged_words_dir=word_dir,
    )  # fmt: skip
    assert values == [0.0]


def test_flagged_words_lang_all_merges_languages(word_dir):
    values, _ = stat(
        "flagged_words_filter", ["坏词 badword ok ok"], "flagged_words_ratio", lang="all",
        flagged_words_dir=word_dir,
    )  # fmt: skip
    assert values == [2 / 4]


def test_word_list_mistakes_fail_at_construction(word_dir, tmp_path):
    with pytest.raises(ValueError, match="no flagged_words list for lang 'xx'.*available: all, en"):
        get_operator("flagged_words_filter")(lang="xx", flagged_words_dir=word_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no stopwords list in .*stopwords.json"):
        get_operator("stopwords_filter")(stopwords_dir=str(empty))
    with pytest.raises(ValueError, match="positive integers"):
        get_operator("stopwords_filter")(words_aug_group_sizes=[0])


def test_shipped_lists_cover_english_and_chinese():
    flagged = load_word_lists(None, "flagged_words")
    stop = load_word_lists(None, "stopwords")
    assert len(flagged["en"]) > 300 and len(flagged["zh"]) > 300
    assert len(stop["en"]) > 1000 and len(stop["zh"]) > 700
    # a shipped flagged word counts, whatever its case (the filter lower-cases words)
    word = next(w for w in flagged["en"] if refine_words([w]) == [w])
    values, kept = stat(
        "flagged_words_filter", [f"Hello {word.upper()} world", "hello world"],
        "flagged_words_ratio",
    )  # fmt: skip
    assert values == [1 / 3, 0.0] and kept == ["hello world"]


def test_stopwords_ratio_shipped_and_given_lists(word_dir):
    # stopwords-iso: the, is, on are English stopwords; cat and mat are not
    values, kept = stat(
        "stopwords_filter", ["The cat is on the mat.", "cat mat"], "stopwords_ratio"
    )
    assert values == [4 / 6, 0.0] and kept == ["The cat is on the mat."]  # min_ratio 0.3
    values, _ = stat("stopwords_filter", ["我们 的 猫"], "stopwords_ratio", lang="zh")
    assert values == [2 / 3]
    values, _ = stat(
        "stopwords_filter", ["The cat is on the mat."], "stopwords_ratio", stopwords_dir=word_dir
    )
    assert values == [3 / 6]


# -- line length filters ------------------------------------------------------------


def test_line_length_stats():
    texts = ["ab\ncdef\n\nxyz", "ab\r\ncd", "", "ab\n", "a" * 12]
    # lines: [ab, cdef, '', xyz] / [ab, cd] / none / [ab] / [aaaaaaaaaaaa]
    values, kept = stat("maximum_line_length_filter", texts, "max_line_length")
    assert values == [4, 2, 0, 2, 12] and kept == ["a" * 12]  # min_len 10
    values, kept = stat("average_line_length_filter", texts, "avg_line_length", min_len=3)
    # len(text) / lines, line breaks counted: 12/4, 6/2, 0, 3/1, 12/1
    assert values == [3.0, 3.0, 0.0, 3.0, 12.0]
    assert kept == ["ab\ncdef\n\nxyz", "ab\r\ncd", "ab\n", "a" * 12]


# -- clean_email_mapper -------------------------------------------------------------


def _map(name: str, texts: list[str], **args) -> list[str]:
    out, _ = run_op(name, [{"text": t} for t in texts], **args)
    return [r["text"] for r in out.rows()]


def test_clean_email_worked_examples():
    texts = [
        "Contact bob.smith+x@mail.example.com now",
        "bob@Example.com keeps",  # Data-Juicer's domain part is lower-case only
        "two: a@b.co,c_d@e.org.",
        "no mail here @ all",
    ]
    assert _map("clean_email_mapper", texts) == [
        "Contact  now", "bob@Example.com keeps", "two: ,.", "no mail here @ all",
    ]  # fmt: skip
    assert _map("clean_email_mapper", texts[:1], repl="[EMAIL]") == ["Contact [EMAIL] now"]
    assert _map("clean_email_mapper", ["x 42 y"], pattern="r'\\d+'", repl="N") == ["x N y"]


def test_clean_email_matches_data_juicer_pattern():
    """Same output as Data-Juicer's pattern on random strings of the characters that matter."""
    slow = regex.compile(EMAIL, flags=regex.DOTALL)
    rng = random.Random(7)
    alphabet = list("aZ9._-+@ .x@") + ["@a.com", "b.c", "A@"]
    for _ in range(4000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        assert _fast_email(text) == slow.sub("<E>", text), text


def _fast_email(text: str) -> str:
    return _map("clean_email_mapper", [text], repl="<E>")[0]


def test_clean_email_is_linear_on_long_runs():
    text = "a" * 40_000 + "@" + "a" * 40_000  # Data-Juicer's regex: minutes (quadratic)
    start = time.perf_counter()
    assert _fast_email(text) == text
    assert time.perf_counter() - start < 3


# -- clean_copyright_mapper ---------------------------------------------------------


def test_clean_copyright_worked_examples():
    cases = {
        "/* Copyright 2020 Foo */\nint x;": "\nint x;",
        "int a; /* (C) COPYRIGHT */ int b;": "int a;  int b;",
        "/* just a comment */\n# kept\ncode": "/* just a comment */\n# kept\ncode",
        "# header\n// more\n\n-- sql\ncode\n# later": "code\n# later",
        "#!/bin/sh\necho": "echo",
        "plain text\n# not leading": "plain text\n# not leading",
        "/* unclosed copyright\ncode": "/* unclosed copyright\ncode",
        "# only comments": "",
    }
    assert _map("clean_copyright_mapper", list(cases)) == list(cases.values())


def _data_juicer_copyright(text: str) -> str:
    """Data-Juicer 1.6.1's clean_copyright_mapper, transcribed (regex search) for comparison."""
    r = regex.compile("/\\*[^*]*\\*+(?:[^/*][^*]*\\*+)*/").search(text)
    if r:
        sub = text[r.start() : r.end()]
        if regex.compile("copyright", regex.IGNORECASE).search(sub):
            text = text[: r.start()] + text[r.end() :]
        return text
    lines = text.split("\n")
    skip = 0
    for line in lines:
        if line.startswith("//") or line.startswith("#") or line.startswith("--") or not line:
            skip += 1
        else:
            break
    return "\n".join(lines[skip:]) if skip else text


def test_clean_copyright_matches_data_juicer():
    rng = random.Random(3)
    alphabet = ["/*", "*/", "*", "/", "a", "\n", "#", "--", "//", "Copyright", " ", "cOpYrIgHt"]
    for _ in range(4000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert clean_copyright(text) == _data_juicer_copyright(text), repr(text)


def test_clean_copyright_is_linear():
    text = "/*a" * 100_000  # Data-Juicer's regex: 34 s at 5,000 repeats, cubic growth
    start = time.perf_counter()
    assert clean_copyright(text) == text
    assert time.perf_counter() - start < 3


# -- token_num_filter ---------------------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("wordpiece")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "!"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return str(folder)


def test_token_num_counts_tokens_without_special_tokens(wordpiece_dir):
    texts = ["Hello worlds!", "hello", "", "hello world hello world hello world hello world hello"]
    # hello | world ##s | !  -> 4; [CLS]/[SEP] are not added
    values, kept = stat("token_num_filter", texts, "num_token", hf_tokenizer=wordpiece_dir)
    assert values == [4, 1, 0, 9]
    assert kept == []  # default min_num 10
    values, kept = stat(
        "token_num_filter", texts, "num_token", hf_tokenizer=wordpiece_dir, min_num=1, max_num=4
    )
    assert kept == texts[:2]


def test_token_num_missing_tokenizer_fails_at_construction(tmp_path):
    with pytest.raises(ModelNotFoundError, match="tokenizer 'no/such-tokenizer' not found"):
        get_operator("token_num_filter")(hf_tokenizer="no/such-tokenizer")


# -- perplexity_filter: Data-Juicer's KenLM + SentencePiece ---------------------------

# A hand-written bigram ARPA model over SentencePiece word pieces (log10 probabilities).
ARPA = """\\data\\
ngram 1=5
ngram 2=1

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t0
-0.5\t</s>\t0
-0.3\t\u2581the\t0
-0.6\t\u2581cat\t0

\\2-grams:
-0.1\t\u2581the \u2581cat

\\end\\
"""


def make_dj_models(folder, langs=("en",)) -> str:
    """Data-Juicer-named model files: `{lang}.sp.model` (a SentencePiece word model trained
    here) and `{lang}.arpa.bin` (the ARPA text above; KenLM reads either format)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = ["the cat sat on the mat", "a dog ran in the park", "the dog sat"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="word",
        vocab_size=14, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    for lang in langs:
        (folder / f"{lang}.sp.model").write_bytes(model.getvalue())
        (folder / f"{lang}.arpa.bin").write_text(ARPA, encoding="utf-8")
    return str(folder)


@pytest.fixture
def dj_cache(tmp_path, monkeypatch):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("kenlm")
    cache = make_dj_models(tmp_path / "dj_models")
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", cache)
    monkeypatch.delenv("DATA_JUICER_EXTERNAL_MODELS_HOME", raising=False)
    return cache


def test_kenlm_perplexity_from_the_data_juicer_cache(dj_cache):
    texts = ["the cat", "the dog", "cat the", ""]
    # pieces ▁the ▁cat: log10 p = -0.3 (the|<s>, backoff 0) - 0.1 (bigram) - 0.5 (</s>|cat)
    #   = -0.9 over 2 words + </s> -> 10 ** (0.9 / 3) = 1.995 -> 2.0
    # ▁the ▁dog: dog is unknown: -0.3 - 1.0 - 0.5 = -1.8 -> 10 ** 0.6 = 3.98 -> 4.0
    # ▁cat ▁the: -0.6 - 0.3 - 0.5 = -1.4 -> 10 ** (1.4 / 3) = 2.93 -> 2.9; "" has no words -> 0
    values, kept = stat("perplexity_filter", texts, "perplexity", max_ppl=3)
    assert values == [2.0, 4.0, 2.9, 0.0]
    assert kept == ["the cat", "cat the", ""]


def test_kenlm_explicit_paths_and_external_home(dj_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError) as err:
        get_operator("perplexity_filter")()
    message = str(err.value)
    # both files named, with the folder to put them in and the other ways
    assert "'en.arpa.bin' not found" in message and "'en.sp.model' not found" in message
    assert f"Put en.arpa.bin in {tmp_path / 'empty'}" in message
    assert "kenlm_model" in message and "sp_model" in message and "hf_model" in message
    op = get_operator("perplexity_filter")(
        kenlm_model=f"{dj_cache}/en.arpa.bin", sp_model=f"{dj_cache}/en.sp.model"
    )
    assert op.model_path == f"{dj_cache}/en.arpa.bin"
    monkeypatch.setenv("DATA_JUICER_EXTERNAL_MODELS_HOME", f"{tmp_path}/nothing:{dj_cache}")
    values, _ = stat("perplexity_filter", ["the cat"], "perplexity")
    assert values == [2.0]


def test_word_filters_tokenize_with_the_data_juicer_sentencepiece_model(dj_cache):
    # pieces ▁the ▁cat ▁the ▁cat: bigrams "▁the ▁cat" x2, "▁cat ▁the" x1 -> 2/3
    values, _ = stat(
        "word_repetition_filter", ["the cat the cat"], "word_rep_ratio", rep_len=2,
        tokenization=True,
    )  # fmt: skip
    assert values == [2 / 3]


# -- words_num_filter / alphanumeric_filter with tokenization: true ---------------------


def test_words_num_counts_refined_sentencepiece_pieces(dj_cache):
    # The word model of make_dj_models knows the, cat, sat, on, mat, a, dog, ran, in, park;
    # any other space-separated chunk is one piece of its own (consecutive unknown chunks
    # would merge into one, so these texts keep them apart). Every piece starts with U+2581,
    # which is not a special character: "\u2581," strips to "\u2581" and counts as a word
    # (Data-Juicer's refinement, not lower-cased), where the whitespace split's "," does not.
    texts = ["the cat , sat 42", "the ... dog", "", "a dog ran in the park", ","]
    # pieces: the cat , sat 42 -> 5 | the ... dog -> 3 | none -> 0 | 6 | "\u2581," -> 1
    values, kept = stat(
        "words_num_filter", texts, "num_words", tokenization=True, min_num=3, max_num=5
    )
    assert values == [5, 3, 0, 6, 1]
    assert kept == texts[:2]
    # whitespace words: ",", "42" and "..." are all special and do not count
    values, _ = stat("words_num_filter", texts, "num_words")
    assert values == [3, 2, 0, 6, 0]
    # the model loads once per worker and is never pickled with the operator
    op = get_operator("words_num_filter")(tokenization=True, sp_model=f"{dj_cache}/en.sp.model")
    assert op.splitter.words_of(texts[:1]) == [op.splitter.words(texts[0])]
    again = pickle.loads(pickle.dumps(op))
    assert again.splitter._sp is None and again.splitter.words_of([","]) == [["\u2581,"]]


def test_words_num_tokenization_model_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("DATA_JUICER_EXTERNAL_MODELS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        get_operator("words_num_filter")(lang="zh", tokenization=True)
    message = str(err.value)
    assert "'zh.sp.model' not found" in message and "sp_model" in message
    assert f"Put zh.sp.model in {tmp_path / 'empty'}" in message
    get_operator("words_num_filter")(lang="zh")  # whitespace words need no model


def test_alpha_token_ratio_is_letters_per_token(wordpiece_dir):
    texts = ["Hello worlds!", "hello 42", "", "!!!", "h\xe9llo"]
    # lower-cased WordPiece over hello, world, ##s, !: hello world ##s ! -> 11 letters / 4
    # hello [UNK] -> 5 / 2 (digits are not letters) | no token -> 0.0 | ! ! ! -> 0 / 3
    # h\xe9llo -> hello (accent stripped) -> 5 / 1 (the text's '\xe9' is a letter)
    values, kept = stat(
        "alphanumeric_filter", texts, "alpha_token_ratio", tokenization=True,
        hf_tokenizer=wordpiece_dir, min_ratio=2.6, max_ratio=5,
    )  # fmt: skip
    assert values == [2.75, 2.5, 0.0, 0.0, 5.0]
    assert kept == ["Hello worlds!", "h\xe9llo"]
    op = get_operator("alphanumeric_filter")(tokenization=True, hf_tokenizer=wordpiece_dir)
    assert op.stats_keys == ("alpha_token_ratio",)
    assert get_operator("alphanumeric_filter")().stats_keys == ("alnum_ratio",)


def test_alpha_token_ratio_counts_the_tokens_tokenize_returns(tiny_lm):
    """Data-Juicer divides by len(tokenizer.tokenize(text)); a byte-level BPE as pythia's."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    texts = ["a photo of a cat", "Z\xfcrich 2024: na\xefve caf\xe9!!", "  spaced   out\n\nx ",
             "\u4e2d\u6587\u5b57", "<image> a dog", " "]  # fmt: skip
    expected = []
    for text in texts:
        tokens = tok.tokenize(text)
        expected.append(sum(c.isalpha() for c in text) / len(tokens) if tokens else 0.0)
    values, _ = stat(
        "alphanumeric_filter", texts, "alpha_token_ratio", tokenization=True, hf_tokenizer=tiny_lm
    )
    assert values == expected
    assert len(set(expected)) == len(texts)  # the cases differ: no constant slips through
    op = pickle.loads(pickle.dumps(get_operator("alphanumeric_filter")(
        tokenization=True, hf_tokenizer=tiny_lm
    )))  # fmt: skip
    assert "_loaded" not in vars(op)  # the tokenizer is not pickled with the operator


def test_alpha_token_ratio_tokenizer_missing(tmp_path, monkeypatch):
    from dj_synth.operators import token_num_filter

    monkeypatch.setattr(token_num_filter, "_hf_cache_dir", lambda repo_id: None)  # none cached
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        get_operator("alphanumeric_filter")(tokenization=True)
    message = str(err.value)
    assert "'EleutherAI/pythia-6.9b-deduped' not found" in message
    assert "--local-dir" in message and "alphanumeric_filter.hf_tokenizer" in message
    get_operator("alphanumeric_filter")()  # the character ratio needs no tokenizer


# -- perplexity_filter: a Hugging Face causal LM --------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from dj_synth.tools.tiny_models import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), seed=0)


def test_hf_perplexity_is_exp_of_the_models_own_loss(tiny_lm):
    """Batched, padded scoring equals transformers' loss on each text alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    texts = ["a photo of a cat sitting on a table", "hello", "a dog", "a dog"]
    expected = []
    for text in texts:
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            expected.append(round(math.exp(model(input_ids=ids, labels=ids).loss.item()), 1))
    values, _ = stat(
        "perplexity_filter", texts + ["", "<__dj__image> a dog <|__dj__eoc|>"], "perplexity",
        hf_model=tiny_lm, accelerator="cpu", gpu_batch_size=2,
    )  # fmt: skip
    # "" has no token to predict; special tokens are removed before scoring
    assert values == expected + [0.0, expected[2]]
    assert len(set(expected)) == 3 and all(v > 1 for v in expected)


def test_hf_perplexity_model_missing(tiny_lm, wordpiece_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        get_operator("perplexity_filter")(hf_model=str(tmp_path / "nothing"))
    with pytest.raises(ModelNotFoundError, match="incomplete"):  # a tokenizer, no weights
        get_operator("perplexity_filter")(hf_model=wordpiece_dir)
    op = get_operator("perplexity_filter")(hf_model=tiny_lm)
    assert op.accelerator == "cuda"  # the HF backend runs on the accelerator by default
