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
# One input: a text, or a text and its pair (NLI, paraphrase, a query and a passage), encoded as
# the model's tokenizer encodes pairs (its template, token type ids, longest-first truncation).
TextInput = str | tuple[str, str]


@dataclass(frozen=True)
class Encoded:
    """One text after tokenisation (special tokens included)."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool
    content_tokens: int = 1  # tokens from the text itself, special tokens not counted
    unknown_only: bool = False  # every content token is the vocabulary's unknown token

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def problem(self) -> str | None:
        """Why the model cannot read this text (None: it can). Nothing left but special
        tokens, or only the unknown token (emoji or a script the vocabulary lacks): the answer
        would be a guess from [CLS] [UNK] [SEP], so it is refused, not guessed at."""
        if not self.content_tokens:
            return NO_TOKENS
        if self.unknown_only:
            return UNKNOWN_ONLY
        return None


NO_TOKENS = "has no content the tokenizer keeps (only whitespace, control or zero-width characters)"
UNKNOWN_ONLY = (
    "has no token the model's vocabulary knows (every piece is its unknown token: emoji, "
    "symbols or a script the model was not trained on)"
)


def unknown_token_id(tokenizer: Tokenizer) -> int | None:
    """The id of the model's unknown token, from the tokenizer's own model: WordPiece, BPE and
    WordLevel name it (`unk_token`), Unigram numbers it (`unk_id`); byte-level models have none."""
    model = tokenizer.model
    name = getattr(model, "unk_token", None)
    if isinstance(name, str):
        return tokenizer.token_to_id(name)
    if type(model).__name__ == "Unigram":
        import json

        unk = json.loads(model.__getstate__()).get("unk_id")
        return unk if isinstance(unk, int) else None
    return None


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`, never trusting the truncation/padding stored in its file."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int) -> None:
        # from_file obeys whatever truncation/padding tokenizer.json carries: set both explicitly.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length, stride=0, strategy="longest_first")
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self.unk_id = unknown_token_id(tokenizer)

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)), max_length, pad_id)

    @property
    def num_special_tokens(self) -> int:
        """Special tokens the model's template adds to one text ([CLS] and [SEP], <s> and </s>)."""
        return int(self._tok.num_special_tokens_to_add(is_pair=False))

    def clone(self, truncation: tuple[int, int] | None) -> Tokenizer:
        """The same tokenizer with another truncation: (max tokens per window, special tokens
        included; tokens each window repeats of the previous one), or None for none."""
        tok = Tokenizer.from_str(self._tok.to_str())
        tok.no_padding()
        if truncation is None:
            tok.no_truncation()
        else:
            window, overlap = truncation
            tok.enable_truncation(max_length=window, stride=overlap, strategy="longest_first")
        return tok

    def windows(self, tokenizer: Tokenizer, text: str) -> list[Encoded]:
        """`text` cut by a clone(truncation=(window, overlap)) into windows, in order: every
        token of the text in at least one, each window with the model's special tokens."""
        enc = tokenizer.encode(text)
        return [self._encoded(w) for w in (enc, *enc.overflowing)]

    def _encoded(self, enc: Encoding) -> Encoded:
        # With truncation on, the tokens cut off are kept in `overflowing`.
        mask = enc.special_tokens_mask
        special = sum(mask)
        ids = enc.ids  # each getter builds a new list
        unknown_only = False
        if self.unk_id is not None and special < len(ids) and self.unk_id in ids:
            unknown_only = all(i == self.unk_id for i, s in zip(ids, mask, strict=True) if not s)
        return Encoded(
            ids,
            enc.type_ids,
            truncated=bool(enc.overflowing),
            content_tokens=len(ids) - special,
            unknown_only=unknown_only,
        )

    def encode(self, texts: Sequence[TextInput]) -> list[Encoded]:
        if len(texts) == 1:  # encode_batch's thread pool costs more than it saves for one text
            one = texts[0]
            enc = self._tok.encode(*one) if isinstance(one, tuple) else self._tok.encode(one)
            return [self._encoded(enc)]
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
