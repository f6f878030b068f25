"""Request and response models of the HTTP edge (the Hugging Face Inference API's shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: StrictInt | None = Field(
        default=None, ge=1, description="How many labels per text; null = all labels, sorted."
    )
    function_to_apply: Literal["softmax", "sigmoid", "none", "default"] | None = Field(
        default=None, description="As the transformers pipeline; default follows the model."
    )
    min_score: StrictFloat | StrictInt | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Beyond the pipeline: labels scoring below it are dropped; a text left with "
        "none is answered {label: UNCERTAIN, score: <best score>}.",
    )

    long_text: Literal["truncate", "windows"] | None = Field(
        default=None,
        description="Beyond the pipeline: a text longer than the model reads is truncated "
        "(`truncate`, the default: the pipeline's answer) or read whole in overlapping windows "
        "whose scores are averaged (`windows`; the x-long-text-windows header says how many "
        "windows each text took). Texts that fit the model get the same answer either way.",
    )

    @field_validator("function_to_apply", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        # transformers' pipeline upper-cases the name and accepts "SOFTMAX": so does this.
        return value.lower() if isinstance(value, str) else value


class TextPair(BaseModel):
    """The pipeline's `{"text": ..., "text_pair": ...}`: a text and its pair (NLI, paraphrase,
    question and passage), encoded as the model's tokenizer encodes pairs."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr
    text_pair: StrictStr | None = None

    def item(self) -> str | tuple[str, str]:
        return self.text if self.text_pair is None else (self.text, self.text_pair)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: StrictStr | TextPair | list[StrictStr | TextPair] = Field(
        description="One text, a {text, text_pair} pair, or a list of them.",
        examples=["I loved this film."],
    )
    parameters: Parameters = Field(default_factory=Parameters)
    options: dict[str, Any] | None = Field(
        default=None,
        description="Inference API options (wait_for_model, use_cache): accepted, no effect.",
    )


class Prediction(BaseModel):
    """One label's score (the pipeline's {label, score})."""

    label: str
    score: float


class ErrorBody(BaseModel):
    error: str
    type: str
    details: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    loaded: bool
    model_id: str
    manifest_sha256: str | None
    load_seconds: float


class Limits(BaseModel):
    max_texts: int
    max_text_chars: int
    max_body_bytes: int
    max_request_tokens: int


class ModelInfo(BaseModel):
    """What GET /model answers: the model, its labels, how it was built and verified."""

    model_id: str
    labels: list[str]
    problem_type: str | None
    max_length: int
    graph_inputs: list[str]
    batching: str
    source: dict[str, Any] | None
    target: dict[str, Any] | None
    quantization: dict[str, Any] | None
    verification: dict[str, Any] | None
    built_at: str | None
    manifest_sha256: str | None
    limits: Limits
