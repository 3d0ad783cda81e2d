"""Training data for MGM: lazy LLaVA-JSON dataset, padding collator, modality-grouped sampler.

Samples are read lazily (the pretrain set is 200k image-caption pairs); an unreadable image is
reported with its path and the sample replaced by another one, as MGM does, so one bad file
never stops a multi-hour run. The sampler reproduces MGM's ``group_by_modality_length``: image
and text-only samples go to separate megabatches of ``batch x world`` so no step mixes them.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .conversation import preprocess_gemma, preprocess_multimodal
from .image_processing import MGMImageProcessor

logger = logging.getLogger(__name__)


def load_llava_json(path: str | Path) -> list[dict[str, Any]]:
    """A LLaVA JSON list (``.json``) or one object per line (``.jsonl``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def _word_count(sample: dict[str, Any]) -> int:
    return sum(len(turn["value"].split()) for turn in sample["conversations"])


def resolve_image_file(folder: Path | None, name: str) -> Path:
    """The image file of a LLaVA sample, with MGM's two conventions for the LLaVA-665k mix the
    challenge's finetune set comes from: OCR-VQA images listed as ``.jpg`` but stored as
    ``.png``, and Visual Genome's ``VG_100K`` / ``VG_100K_2`` folders merged into ``images``.
    Unlike MGM, a file that exists under its listed name is always taken as is."""
    path = folder / name if folder is not None else Path(name)
    if path.exists():
        return path
    if "ocr" in name:
        alt = name.replace(".jpg", ".png")
    elif "VG_100K" in name:
        alt = name.replace("VG_100K_2", "images").replace("VG_100K", "images")
    else:
        return path
    return folder / alt if folder is not None else Path(alt)


class LazySupervisedDataset(Dataset):
    """``{"id", "image" (relative to ``image_folder``; str or list), "conversations"}`` samples,
    tokenized with the gemma template on access. Items: ``input_ids``, ``labels``, ``image``
    ([n, 3, h, w]) and ``image_aux`` ([n, 3, H, W]) when ``image_processor`` is given."""

    def __init__(
        self,
        data_path: str | Path,
        tokenizer: Any,
        image_processor: MGMImageProcessor | None = None,
        image_folder: str | Path | None = None,
        template: str = "gemma",
        max_retries: int = 10,
    ) -> None:
        self.samples = load_llava_json(data_path)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_folder = Path(image_folder) if image_folder else None
        self.template = template
        self.max_retries = max_retries
        self.failures = 0

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        """Word count, plus 128 for samples with an image (MGM's estimate)."""
        return [_word_count(s) + (128 if "image" in s else 0) for s in self.samples]

    @property
    def modality_lengths(self) -> list[int]:
        """Word count, negated for text-only samples (what the modality sampler groups on)."""
        out = []
        for s in self.samples:
            n = max(1, _word_count(s))
            out.append(n if "image" in s else -n)
        return out

    def image_paths(self, sample: dict[str, Any]) -> list[Path]:
        files = sample["image"] if isinstance(sample["image"], list) else [sample["image"]]
        return [resolve_image_file(self.image_folder, f) for f in files]

    def _load(self, i: int) -> dict[str, torch.Tensor]:
        from PIL import Image

        sample = self.samples[i]
        has_image = "image" in sample
        conversations = sample["conversations"]
        item: dict[str, torch.Tensor] = {}
        if has_image:
            if self.image_processor is None:
                raise ValueError("a sample has an image but no image processor was given")
            pairs = []
            for path in self.image_paths(sample):
                with Image.open(path) as img:
                    img.load()
                    pairs.append(self.image_processor(img))
            item["image"] = torch.stack([p[0] for p in pairs])
            item["image_aux"] = torch.stack([p[1] for p in pairs])
            conversations = preprocess_multimodal(conversations)
        elif self.image_processor is not None:
            image, image_aux = self.image_processor.blank()
            item["image"], item["image_aux"] = image[None], image_aux[None]
        tokens = preprocess_gemma(
            conversations, self.tokenizer, has_image=has_image, template=self.template
        )
        item.update(tokens)
        return item

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = random.Random(i)
        index = i
        for attempt in range(self.max_retries + 1):
            try:
                return self._load(index)
            except Exception as err:  # noqa: BLE001 - any bad sample is replaced, never fatal
                self.failures += 1
                sample = self.samples[index]
                where = sample.get("image", "(no image)")
                if "image" in sample:
                    where = ", ".join(str(p) for p in self.image_paths(sample))
                logger.warning(
                    "Error in loading %d (id %s) of [%s]: %s: %s; replacing it (attempt %d)",
                    index,
                    sample.get("id"),
                    where,
                    type(err).__name__,
                    err,
                    attempt + 1,
                )
                index = rng.randrange(len(self.samples))
        raise RuntimeError(f"{self.max_retries + 1} samples in a row failed to load, from {i}")


@dataclass
class DataCollatorForSupervisedDataset:
    """Pads ids with ``pad_token_id`` and labels with -100, truncates to ``model_max_length``,
    masks padding, and concatenates the samples' image stacks in sample order.

    With ``image_tokens`` (features per image), labels that the model's own cut will drop --
    those whose position after each -200 becomes ``image_tokens`` rows lies at or past
    ``model_max_length`` -- are set to -100 here already. The model's loss is unchanged; the
    supervised-token count the Trainer takes from these labels (``--fidelity fast``) then
    equals the tokens the loss actually averages over.
    """

    tokenizer: Any
    model_max_length: int | None = None
    image_tokens: int | None = None

    def _mask_past_cut(self, ids: torch.Tensor, labels: torch.Tensor, max_len: int) -> torch.Tensor:
        images_before = torch.cumsum((ids == IMAGE_TOKEN_INDEX).long(), 0)
        images_before = images_before - (ids == IMAGE_TOKEN_INDEX).long()
        expanded = torch.arange(len(ids)) + images_before * (self.image_tokens - 1)
        return labels.masked_fill(expanded >= max_len, IGNORE_INDEX)

    def __call__(self, instances: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        max_len = self.model_max_length or self.tokenizer.model_max_length
        ids = [x["input_ids"][:max_len] for x in instances]
        labels = [x["labels"][:max_len] for x in instances]
        if self.image_tokens:
            labels = [self._mask_past_cut(i, lab, max_len) for i, lab in zip(ids, labels)]
        input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad_id)
        labels_t = torch.nn.utils.rnn.pad_sequence(
            labels, batch_first=True, padding_value=IGNORE_INDEX
        )
        batch: dict[str, torch.Tensor] = {
            "input_ids": input_ids,
            "labels": labels_t,
            "attention_mask": input_ids.ne(pad_id),
        }
        if "image" in instances[0]:
            batch["images"] = torch.cat([x["image"] for x in instances])
            batch["images_aux"] = torch.cat([x["image_aux"] for x in instances])
        return batch


# ----------------------------------------------------------------------------- sampler


def _split_to_even_chunks(indices: list[int], lengths: Sequence[int], n: int) -> list[list[int]]:
    if len(indices) % n != 0:
        return [indices[i::n] for i in range(n)]
    per_chunk = len(indices) // n
    chunks: list[list[int]] = [[] for _ in range(n)]
    totals: list[float] = [0] * n
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: Any = None
) -> list[int]:
    indices = torch.randperm(len(lengths), generator=generator)
    mega = world_size * batch_size
    megabatches = [indices[i : i + mega].tolist() for i in range(0, len(lengths), mega)]
    megabatches = [sorted(m, key=lambda i: lengths[i], reverse=True) for m in megabatches]
    return [
        i
        for m in megabatches
        for chunk in _split_to_even_chunks(m, lengths, world_size)
        for i in chunk
    ]


def modality_length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: Any = None
) -> list[int]:
    """MGM's order: image (length > 0) and text (length < 0) samples in separate megabatches,
    megabatches shuffled, the two leftover partial megabatches merged at the end."""
    if any(n == 0 for n in lengths):
        raise ValueError("modality lengths must be non-zero")
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm = [(i, n) for i, n in enumerate(lengths) if n > 0]
    lang = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    mega = world_size * batch_size
    groups = []
    for pairs in (mm, lang):
        idx, lens = zip(*pairs)
        order = [idx[i] for i in length_grouped_indices(lens, batch_size, world_size, generator)]
        groups.append([order[i : i + mega] for i in range(0, len(order), mega)])
    additional = groups[0][-1] + groups[1][-1]
    megabatches = groups[0][:-1] + groups[1][:-1]
    perm = torch.randperm(len(megabatches), generator=generator)
    megabatches = [megabatches[i] for i in perm]
    if additional:
        megabatches.append(sorted(additional))
    return [i for m in megabatches for i in m]


class ModalityLengthGroupedSampler(Sampler[int]):
    """``group_by_modality_length``: ``world_size`` is processes x gradient accumulation steps,
    so every optimizer step's micro-batches come from one megabatch of one modality."""

    def __init__(
        self,
        batch_size: int,
        world_size: int,
        lengths: Sequence[int],
        generator: Any = None,
    ) -> None:
        self.batch_size = batch_size
        self.world_size = world_size
        self.lengths = list(lengths)
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(
            modality_length_grouped_indices(
                self.lengths, self.batch_size, self.world_size, self.generator
            )
        )
