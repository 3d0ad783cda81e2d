"""Word lists ({lang: [words]} JSON, Data-Juicer's format) and the filters on their ratio.

`flagged_words_filter` and `stopwords_filter` share everything but the list and the
defaults: the stat is (refined words found in the list) / (refined words), 0.0 for a
text without words.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import RangeFilter
from .batch import Batch
from .words import WordSplitter, check_group_sizes, refine_words

# Lists shipped with dj-synth (sources and licences: wordlists/README.md).
SHIPPED_DIR = Path(__file__).parent / "wordlists"


def load_word_lists(words_dir: str | os.PathLike[str] | None, words_type: str) -> dict[str, list]:
    """Every `*.json` in `words_dir` whose name contains `words_type`, merged per language.

    As Data-Juicer's `load_words_asset`; None means the shipped lists. A folder
    without such a file is an error (Data-Juicer would download its own list).
    """
    folder = Path(os.path.expanduser(words_dir)) if words_dir else SHIPPED_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{words_type} folder {folder} does not exist")
    merged: dict[str, list] = {}
    for file in sorted(folder.iterdir()):
        if file.name.endswith(".json") and words_type in file.name:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read word list {file}: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError(f"word list {file} must be a JSON object {{lang: [words]}}")
            for lang, words in data.items():
                merged.setdefault(lang, []).extend(words)
    if not merged:
        raise FileNotFoundError(
            f"no {words_type} list in {folder}: expected a JSON file whose name contains "
            f"{words_type!r} (Data-Juicer's {words_type}.json, {{lang: [words]}}); leave the "
            "argument unset to use the lists shipped with dj-synth"
        )
    return merged


class WordListRatioFilter(RangeFilter):
    """Base of the filters on the share of words found in a word list."""

    words_type: str  # "flagged_words" or "stopwords": file names and messages
    min_arg, max_arg = "min_ratio", "max_ratio"

    def _init_words(
        self,
        lang: str,
        tokenization: bool,
        words_dir: str | None,
        dir_arg: str,
        use_words_aug: bool,
        words_aug_group_sizes: list[int],
        words_aug_join_char: str,
        sp_model: str | None,
    ) -> None:
        check_group_sizes(self.name, words_aug_group_sizes)
        lists = load_word_lists(words_dir, self.words_type)
        # Data-Juicer merges every language into "all" unless a file defines it.
        if "all" not in lists:
            lists["all"] = [w for words in lists.values() for w in words]
        if lang not in lists:
            # Data-Juicer raises KeyError on every sample at run time; we fail at once.
            where = words_dir or "the shipped lists"
            raise ValueError(
                f"{self.name}: no {self.words_type} list for lang {lang!r} in {where} "
                f"(available: {', '.join(sorted(lists))}); set {dir_arg} to a folder with one"
            )
        self.lang = lang
        self.tokenization = tokenization
        self.use_words_aug = use_words_aug
        self.words_aug_group_sizes = list(words_aug_group_sizes)
        self.words_aug_join_char = words_aug_join_char
        self.words = frozenset(lists[lang])
        self.splitter = WordSplitter(self.name, lang, tokenization, sp_model)

    def compute(self, batch: Batch) -> list[float]:
        listed = self.words
        out = []
        for text in batch.texts:
            words = refine_words(
                self.splitter.words(text),
                self.use_words_aug,
                self.words_aug_group_sizes,
                self.words_aug_join_char,
            )
            out.append(sum(w in listed for w in words) / len(words) if words else 0.0)
        return out
