"""tokenizer.json -> ids and masks, with truncation set explicitly and padding per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

IntArray = npt.NDArray[np.int64]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Encoded:
    """One text after tokenisation (special tokens included)."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool
    content_tokens: int = 1  # tokens from the text itself, special tokens not counted

    @property
    def length(self) -> int:
        return len(self.ids)


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`, never trusting the truncation/padding stored in its file."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int) -> None:
        # from_file obeys whatever truncation/padding tokenizer.json carries: set both explicitly.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length, stride=0, strategy="longest_first")
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)), max_length, pad_id)

    @staticmethod
    def _encoded(enc: Encoding) -> Encoded:
        # With truncation on, the tokens cut off are kept in `overflowing`.
        special = sum(enc.special_tokens_mask)
        ids = enc.ids  # each getter builds a new list
        return Encoded(
            ids,
            enc.type_ids,
            truncated=bool(enc.overflowing),
            content_tokens=len(ids) - special,
        )

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        if len(texts) == 1:  # encode_batch's thread pool costs more than it saves for one text
            return [self._encoded(self._tok.encode(texts[0]))]
        return [self._encoded(e) for e in self._tok.encode_batch(list(texts))]

    @staticmethod
    def _one(one: Encoded, name: str) -> IntArray:
        """One text's row of input `name`, built only when the graph declares that input."""
        if name == "attention_mask":
            return np.ones((1, one.length), dtype=np.int64)
        return np.asarray([one.ids if name == "input_ids" else one.type_ids], dtype=np.int64)

    def pad(
        self, batch: Sequence[Encoded], names: Sequence[str] = INPUT_NAMES
    ) -> dict[str, IntArray]:
        """Right-pad a batch to its longest member: ids, attention mask, token type ids (only
        those in `names`: a graph's declared inputs)."""
        if len(batch) == 1:  # nothing to pad: the one-text path, kept short
            one = batch[0]
            return {name: self._one(one, name) for name in names}
        width = max(e.length for e in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : e.length] = e.ids
            mask[row, : e.length] = 1
            types[row, : e.length] = e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in names}
