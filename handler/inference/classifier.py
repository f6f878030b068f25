"""Classifier.from_dir(dir): texts in, answers out. `answer` is the one way from texts to answers
(tokenise or take the caller's tokens, read, infer in micro-batches, score); `predict` is the
transformers pipeline's contract on top of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from handler.errors import ArtifactError, InvalidInput, OutOfTime
from handler.inference import postprocess
from handler.inference.inputs import check_texts, pair_of
from handler.inference.long_text import TRUNCATE, Windows, check_mode, combine
from handler.inference.postprocess import LEGACY, FloatArray, TopK
from handler.inference.session import create_session
from handler.inference.tokenizer import INPUT_NAMES, Encoded, TextInput, TextTokenizer

RUNTIME_CONFIG = "config.json"


def _untraced(stage: str) -> AbstractContextManager[Any]:
    return nullcontext()


BATCHING_MODES = ("per_text", "padded", "same_length")


@dataclass(frozen=True)
class ModelConfig:
    """What the runtime needs of a model's config (written by the build as config.json)."""

    id2label: Mapping[int, str]
    problem_type: str | None
    max_length: int
    pad_token_id: int
    batching: str = "per_text"
    pre_optimized: bool = False
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    # Length-sorted micro-batches: 8 was fastest of 8/16/32 for per-token int8 (stand-in, 1 thread).
    max_batch_size: int = 8
    # How `long_text: windows` cuts a text longer than max_length (handler/inference/long_text.py).
    long_text: Windows = field(default_factory=Windows)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelConfig:
        try:
            id2label = {int(k): str(v) for k, v in data["id2label"].items()}
            config = cls(
                id2label=id2label,
                problem_type=data.get("problem_type"),
                max_length=int(data["max_length"]),
                pad_token_id=int(data.get("pad_token_id") or 0),
                batching=str(data.get("batching", "per_text")),
                pre_optimized=bool(data.get("pre_optimized", False)),
                model_file=str(data.get("model_file", "model.onnx")),
                tokenizer_file=str(data.get("tokenizer_file", "tokenizer.json")),
                max_batch_size=int(data.get("max_batch_size", 8)),
                long_text=Windows(**data["long_text"]) if "long_text" in data else Windows(),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{RUNTIME_CONFIG} is invalid: {exc!r}") from exc
        if sorted(id2label) != list(range(len(id2label))) or not id2label:
            raise ArtifactError(f"{RUNTIME_CONFIG}: id2label must number labels 0..n-1")
        if config.batching not in BATCHING_MODES:
            raise ArtifactError(f"{RUNTIME_CONFIG}: batching must be one of {BATCHING_MODES}")
        return config

    def to_json(self) -> dict[str, Any]:
        return {
            "id2label": {str(k): v for k, v in sorted(self.id2label.items())},
            "problem_type": self.problem_type,
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "batching": self.batching,
            "pre_optimized": self.pre_optimized,
            "model_file": self.model_file,
            "tokenizer_file": self.tokenizer_file,
            "max_batch_size": self.max_batch_size,
            **({"long_text": asdict(self.long_text)} if self.long_text != Windows() else {}),
        }


@dataclass(frozen=True)
class TextResult:
    """One text's raw outcome: logits, tokens fed (special tokens included), truncation. A text
    read in windows also has each window's logits and text tokens (its `logits` are their
    mean; its scores combine the windows' scores)."""

    logits: FloatArray
    num_tokens: int
    truncated: bool
    windows: int = 1
    window_logits: FloatArray | None = None
    window_tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Reading:
    """The rows the model will run for some texts, and which rows are whose: `spans[i]` is text
    i's (first row, end row, cut at the window cap)."""

    rows: list[Encoded]
    spans: list[tuple[int, int, bool]] = field(default_factory=list)
    windowed: bool = False

    @property
    def tokens(self) -> list[int]:
        return [r.length for r in self.rows]


@dataclass(frozen=True)
class Answers:
    """What the model says of some texts, in input order: each text's result (logits, tokens,
    truncation, windows) and scores ([texts, labels], after the scoring function)."""

    results: list[TextResult]
    scores: FloatArray
    id2label: Mapping[int, str]

    def labelled(self, top_k: TopK = LEGACY) -> list[Any]:
        """Each text's answer as the pipeline gives it: {label, score}, or with `top_k` given a
        score-sorted list of that many labels (None: all)."""
        rows = np.asarray(self.scores, dtype=np.float32).tolist()  # one conversion for all rows
        return [postprocess.format_scores(row, self.id2label, top_k) for row in rows]


class Classifier:
    """A text classifier served from an ONNX graph and a tokenizer.json.

    Predictions are batch-invariant: a text's answer never depends on the other texts in its
    call. Graphs whose every row is computed on its own (fp32, and per-token int8, whose
    activation scales are per token) run in length-sorted padded micro-batches ("padded").
    Artifacts of the earlier per-tensor int8 recipe, whose activation scales spanned the whole
    input tensor, padding included, run one text at a time ("per_text"). Artifacts whose target's
    kernels round a row differently when padding lengthens it (arm64: onnxruntime's
    MultiHeadAttention on Neoverse N1) run texts of equal token length together, unpadded
    ("same_length").
    """

    def __init__(
        self, session: ort.InferenceSession, tokenizer: TextTokenizer, config: ModelConfig
    ) -> None:
        declared = [i.name for i in session.get_inputs()]
        # The inputs this core knows how to produce; a graph declaring anything else is refused.
        unknown = [name for name in declared if name not in INPUT_NAMES]
        if unknown or "input_ids" not in declared:
            raise ArtifactError(
                f"graph inputs {declared} not supported: expected input_ids and optionally "
                f"{', '.join(INPUT_NAMES[1:])}"
            )
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.input_names = tuple(declared)
        self.output_name = session.get_outputs()[0].name
        self.id2label = dict(config.id2label)
        self.num_labels = len(self.id2label)
        self._batch = 1 if config.batching == "per_text" else max(1, config.max_batch_size)
        # A span per stage of `answer` (tokenise, inference, postprocess) when tracing is on
        # (handler/observability.py start_tracing); a no-op otherwise.
        self.trace: Callable[[str], AbstractContextManager[Any]] = _untraced
        self._windows_tok: Any = None
        # A config.json whose windows the model cannot hold is refused at load, not per request.
        config.long_text.fit(config.max_length).check(
            config.max_length, tokenizer.num_special_tokens
        )

    @classmethod
    def from_dir(cls, path: Path | str, threads: int = 1) -> Classifier:
        folder = Path(path)
        config_path = folder / RUNTIME_CONFIG
        if not config_path.is_file():
            raise ArtifactError(f"{folder} is not a built model folder: {RUNTIME_CONFIG} missing")
        config = ModelConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        for name in (config.model_file, config.tokenizer_file):
            if not (folder / name).is_file():
                raise ArtifactError(f"{folder} is missing {name}")
        tokenizer = TextTokenizer.from_file(
            folder / config.tokenizer_file, config.max_length, config.pad_token_id
        )
        session = create_session(folder / config.model_file, threads, config.pre_optimized)
        return cls(session, tokenizer, config)

    # -- the one way from texts to answers -----------------------------------------------------

    def answer(
        self,
        texts: Sequence[TextInput],
        encoded: Sequence[Encoded] | None = None,
        *,
        function_to_apply: str | None = None,
        long_text: str = TRUNCATE,
        max_windows: int | None = None,
        stop: Callable[[], bool] | None = None,
        admit: Callable[[Reading], None] | None = None,
        strict: bool = False,
    ) -> Answers:
        """Texts in, answers out: what the API, S3 batch, the warm-up, the build's gate and
        `predict` all run, so a change to reading, inference or scoring happens here once.

        `encoded`: the texts as the caller tokenised them; None: tokenised here, the first
        unreadable text refused when `strict` (the API), nothing refused otherwise (the gate and
        `eval` measure the whole file they are given). `admit` sees what will run before any of
        it does (the API's token budget raises there). `stop`: see `infer`. Each stage is a
        span when tracing is on (`trace`)."""
        with self.trace("tokenise"):
            if encoded is None and strict:
                encoded = self.encode(texts)
            elif encoded is None:
                encoded = self.tokenizer.encode(list(texts)) if texts else []
            reading = self.reading(texts, encoded, long_text, max_windows)
        if admit is not None:
            admit(reading)
        with self.trace("inference"):
            results = self.infer_reading(reading, stop)
        with self.trace("postprocess"):
            scores = self.scores(results, function_to_apply)
        return Answers(results, scores, self.id2label)

    def encode(self, texts: Sequence[object]) -> list[Encoded]:
        """Every text checked and tokenised; the error names the first that cannot be used."""
        checked = check_texts(texts)
        encoded = self.tokenizer.encode(checked) if checked else []
        for i, enc in enumerate(encoded):
            problem = enc.problem
            if problem is not None:
                raise InvalidInput(f"input {i} {problem}")
        return encoded

    def reading(
        self,
        texts: Sequence[TextInput],
        encoded: Sequence[Encoded],
        long_text: str = TRUNCATE,
        max_windows: int | None = None,
    ) -> Reading:
        """What the model runs for these texts: each as encoded, or (`windows`) each text longer
        than the model reads as its windows, at most `max_windows` of them (the rest of such a
        text is cut, and its answer flagged truncated)."""
        check_mode(long_text)
        if long_text == TRUNCATE or not any(e.truncated for e in encoded):
            return Reading(list(encoded))  # one row per text: infer_reading needs no spans
        rows: list[Encoded] = []
        spans = []
        for text, enc in zip(texts, encoded, strict=True):
            windows = [enc]
            if enc.truncated and isinstance(text, str):  # a pair is cut longest-first
                windows = self.tokenizer.windows(self._window_tokenizer(), text)
            capped = max_windows is not None and len(windows) > max_windows
            if capped:
                windows = windows[:max_windows]
            spans.append((len(rows), len(rows) + len(windows), capped))
            rows += windows
        return Reading(rows, spans, windowed=True)

    def _window_tokenizer(self) -> Any:
        """Made on the first text read in windows: a clone costs a serialisation round trip,
        which no cold start of a function serving only `truncate` should pay."""
        if self._windows_tok is None:
            policy = self.config.long_text.fit(self.config.max_length)
            self._windows_tok = self.tokenizer.clone((policy.window, policy.overlap))
        return self._windows_tok

    def infer_reading(
        self, reading: Reading, stop: Callable[[], bool] | None = None
    ) -> list[TextResult]:
        """Run a reading's rows (all texts' windows in shared micro-batches); one result per
        text, in order."""
        results = self.infer(reading.rows, stop)
        if not reading.windowed:
            return results
        out = []
        for start, end, capped in reading.spans:
            if end - start == 1 and not capped:
                out.append(results[start])
                continue
            part = results[start:end]
            stacked = np.stack([r.logits for r in part])
            out.append(
                TextResult(
                    logits=stacked.mean(0),
                    num_tokens=sum(r.num_tokens for r in part),
                    truncated=capped,
                    windows=end - start,
                    window_logits=stacked,
                    window_tokens=tuple(e.content_tokens for e in reading.rows[start:end]),
                )
            )
        return out

    def logits(self, batch: Sequence[Encoded]) -> FloatArray:
        """Logits of one padded batch, as given (no sorting, no splitting)."""
        feed = self.tokenizer.pad(batch, self.input_names)
        out: FloatArray = self.session.run([self.output_name], feed)[0]
        if out.dtype != np.float32 or out.ndim != 2:  # [batch, labels] float32 as exported
            out = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
        return out

    def infer(
        self, encoded: Sequence[Encoded], stop: Callable[[], bool] | None = None
    ) -> list[TextResult]:
        """Run tokenised texts (in micro-batches where the graph allows); input order kept.

        `stop` is asked before every run after the first: when it says so, OutOfTime is raised
        and the work is dropped, so a caller with a deadline overshoots it by one run at most.
        """
        if not encoded:
            return []
        logits: list[FloatArray | None] = [None] * len(encoded)
        if self._batch == 1:
            groups = [[i] for i in range(len(encoded))]
        else:
            # Sort by length so each padded micro-batch wastes little on padding.
            order = sorted(range(len(encoded)), key=lambda i: encoded[i].length)
            runs = [order]
            if self.config.batching == "same_length":  # never padded: equal lengths only
                runs = [list(g) for _, g in groupby(order, key=lambda i: encoded[i].length)]
            groups = [r[s : s + self._batch] for r in runs for s in range(0, len(r), self._batch)]
        for n, idx in enumerate(groups):
            if n and stop is not None and stop():
                raise OutOfTime(f"stopped with {len(groups) - n} of {len(groups)} runs to do")
            for i, row in zip(idx, self.logits([encoded[i] for i in idx]), strict=True):
                logits[i] = row
        return [
            TextResult(logits=lg, num_tokens=enc.length, truncated=enc.truncated)
            for lg, enc in zip(logits, encoded, strict=True)
            if lg is not None
        ]

    def resolve_function(self, function_to_apply: str | None) -> str:
        """The pipeline's choice: the caller's function, else one from problem type and labels."""
        return postprocess.resolve_function(
            function_to_apply, self.config.problem_type, self.num_labels
        )

    def scores(self, results: Sequence[TextResult], function_to_apply: str | None) -> FloatArray:
        if not results:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        # One text (the API's usual call): a view, not np.stack (~40 us with cold caches).
        logits = (
            results[0].logits[np.newaxis]
            if len(results) == 1
            else np.stack([r.logits for r in results])
        )
        scores = self.scores_from_logits(logits, function_to_apply)
        aggregation = self.config.long_text.aggregation
        if aggregation == "mean_logits":  # a windowed text's logits are its windows' mean
            return scores
        for i, r in enumerate(results):
            if r.window_logits is not None:  # the windows' scores, combined
                each = self.scores_from_logits(r.window_logits, function_to_apply)
                scores[i] = combine(each, r.window_tokens, aggregation)
        return scores

    def scores_from_logits(
        self, logits: FloatArray, function_to_apply: str | None = None
    ) -> FloatArray:
        return postprocess.apply(self.resolve_function(function_to_apply), logits)

    def predict(
        self,
        inputs: str | Mapping[str, str] | Sequence[str | Mapping[str, str]],
        *,
        top_k: TopK = LEGACY,
        function_to_apply: str | None = None,
        long_text: str = TRUNCATE,
    ) -> Any:
        """The transformers `pipeline("text-classification")` contract.

        A string gives `[{"label", "score"}]`; `{"text": ..., "text_pair": ...}` gives
        `{"label", "score"}`; a list gives one answer per input. With `top_k`
        given (None = every label), each answer is a score-sorted list of that many labels.
        Texts over the model's max length are truncated (as with `truncation=True`), or with
        `long_text="windows"` read whole in windows whose scores are combined.
        """
        postprocess.check_top_k(top_k)
        check_mode(long_text)
        self.resolve_function(function_to_apply)  # fail on a bad name before any work
        single = isinstance(inputs, str | Mapping)
        if not single and not isinstance(inputs, Sequence):
            raise InvalidInput(
                "inputs must be a string, a {text, text_pair} object or a list of them, got "
                f"{type(inputs).__name__}"
            )
        items: Sequence[object] = [inputs] if single else list(inputs)
        texts = [
            pair_of(item, i) if isinstance(item, Mapping) else item for i, item in enumerate(items)
        ]
        checked = check_texts(texts)
        answers = self.answer(
            checked, function_to_apply=function_to_apply, long_text=long_text, strict=True
        ).labelled(top_k)
        # The pipeline: one string answers [answer]; one {text, text_pair} answers the answer.
        return postprocess.shape(answers, single, wrap=isinstance(inputs, str))
