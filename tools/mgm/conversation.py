"""MGM's ``gemma`` conversation template, ``<image>`` tokenization and label masking.

Both challenge stages run ``--version gemma``, so the exact prompt string and which tokens are
supervised decide what the model learns. This follows MGM's ``conv_gemma`` and
``preprocess_gemma``: only each answer, its ``<end_of_turn>\\n`` and the ``<eos>`` are supervised;
a sample whose per-round token count disagrees with the whole (a tokenization mismatch) is
fully masked with a warning rather than trained on misaligned labels.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX

logger = logging.getLogger(__name__)


@dataclass
class Conversation:
    """MGM's ``SeparatorStyle.GEMMA`` conversation (``system + sep`` then one block per turn)."""

    system: str = ""
    roles: tuple[str, str] = ("user", "model")
    messages: list[list[Any]] = field(default_factory=list)
    sep: str = ""
    sep2: str = "<eos>"
    version: str = "gemma"

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        seps = [self.sep, self.sep2]
        ret = self.system + self.sep
        for i, (role, message) in enumerate(self.messages):
            if message:
                ret += f"<start_of_turn>{role}\n{message}<end_of_turn>\n{seps[i % 2]}"
            else:
                ret += f"<start_of_turn>{role}\n"
        return ret

    def copy(self) -> Conversation:
        return copy.deepcopy(self)


conv_gemma = Conversation()
conv_templates: dict[str, Conversation] = {"gemma": conv_gemma}


def tokenizer_image_token(
    prompt: str, tokenizer: Any, image_token_index: int = IMAGE_TOKEN_INDEX
) -> list[int]:
    """Tokenize ``prompt`` with each ``<image>`` replaced by ``image_token_index``.

    Each chunk is tokenized on its own (each gets a ``<bos>``); one leading ``<bos>`` is kept.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(image_token_index)
        ids.extend(chunk[offset:])
    return ids


def preprocess_multimodal(conversations: list[dict[str, str]]) -> list[dict[str, str]]:
    """Move ``<image>`` to the start of its message, followed by a newline (MGM's rule)."""
    out = []
    for turn in conversations:
        value = turn["value"]
        if DEFAULT_IMAGE_TOKEN in value:
            value = value.replace(DEFAULT_IMAGE_TOKEN, "").strip()
            value = (DEFAULT_IMAGE_TOKEN + "\n" + value).strip()
        out.append({**turn, "value": value})
    return out


def render_gemma(conversations: Sequence[dict[str, str]], template: str = "gemma") -> str:
    """The training prompt: turns must alternate human/gpt; a leading non-human turn is dropped."""
    conv = conv_templates[template].copy()
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    source = list(conversations)
    if source and roles.get(source[0]["from"]) != conv.roles[0]:
        source = source[1:]
    conv.messages = []
    for j, turn in enumerate(source):
        role = roles.get(turn["from"])
        if role != conv.roles[j % 2]:
            raise ValueError(f"turn {j} is from {turn['from']!r}; turns must alternate human/gpt")
        conv.append_message(role, turn["value"])
    return conv.get_prompt()


def preprocess_gemma(
    conversations: Sequence[dict[str, str]],
    tokenizer: Any,
    has_image: bool = False,
    template: str = "gemma",
) -> dict[str, torch.Tensor]:
    """Token ids and labels of one conversation, masked as MGM's ``preprocess_gemma``.

    Images stay one -200 id here (the 576-row expansion happens in the model). Text-only samples
    are truncated to ``tokenizer.model_max_length``; image samples are truncated by the collator.
    """
    conv = conv_templates[template]
    prompt = render_gemma(conversations, template)
    if has_image:
        input_ids = torch.tensor(tokenizer_image_token(prompt, tokenizer), dtype=torch.long)
    else:
        input_ids = torch.tensor(
            tokenizer(prompt, max_length=tokenizer.model_max_length, truncation=True).input_ids,
            dtype=torch.long,
        )
    target = input_ids.clone()
    total_len = int(target.ne(tokenizer.pad_token_id).sum())
    sep = f"<start_of_turn>{conv.roles[1]}\n"

    def n_tokens(text: str) -> int:
        if has_image:
            return len(tokenizer_image_token(text, tokenizer))
        return len(tokenizer(text).input_ids)

    cur_len = 1
    target[:cur_len] = IGNORE_INDEX
    for rou in prompt.split(conv.sep2):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len = n_tokens(rou)
        instruction_len = n_tokens(parts[0] + sep) - 1
        target[cur_len : cur_len + instruction_len] = IGNORE_INDEX
        cur_len += round_len
    target[cur_len:] = IGNORE_INDEX
    if cur_len < tokenizer.model_max_length and cur_len != total_len:
        target[:] = IGNORE_INDEX
        logger.warning("WARNING: tokenization mismatch: %d vs. %d. (ignored)", cur_len, total_len)
    return {"input_ids": input_ids, "labels": target}


def generation_prompt(question: str, template: str = "gemma", with_image: bool = True) -> str:
    """The eval prompt: ``<start_of_turn>user\\n<image>\\n{q}<end_of_turn>\\n<start_of_turn>model\\n``."""
    conv = conv_templates[template].copy()
    text = (DEFAULT_IMAGE_TOKEN + "\n" + question) if with_image else question
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
