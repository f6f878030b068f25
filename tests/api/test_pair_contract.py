"""Text pairs answer as transformers' pipeline("text-classification") answers them, for a BERT
(token type ids) and a RoBERTa (one segment, no token types) pair classifier generated here:
`{"text", "text_pair"}` alone and in lists, top_k, and longest-first truncation of the longer
member. The build's gate reads a TSV of pairs (`text<TAB>text_pair<TAB>label`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from handler.compiler.gate import Gate
from handler.compiler.pipeline import BuildOptions, build
from tests import tiny
from tests.api.helpers import call, http_event, make_handler, same_as_pipeline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None
        or importlib.util.find_spec("torch") is None,
        reason="the contract test needs transformers and torch",
    ),
]
LABELS = ["contradiction", "neutral", "entailment"]
LONG = "good great fun the movie was a wonderful plot " * 8
PAIRS = [
    {"text": "the movie was good", "text_pair": "it is a great film"},
    {"text": "good plot", "text_pair": "awful and dull"},
    {"text": "the plot", "text_pair": "a movie"},
    {"text": "i hated it", "text_pair": "i loved it , best film"},
    {"text": LONG, "text_pair": "awful plot"},  # the text is cut, longest first
    {"text": "bad", "text_pair": LONG},  # the pair is cut
    {"text": LONG, "text_pair": LONG},  # both, alternately
    {"text": "only a text here"},  # no pair: a single text
]
CALLS: list[tuple[Any, dict[str, Any]]] = [
    (PAIRS[0], {}),
    (PAIRS[4], {}),
    (PAIRS, {}),
    (PAIRS[1], {"top_k": None}),
    (PAIRS, {"top_k": 2}),
    (PAIRS, {"function_to_apply": "none"}),
]


def make_pair_model(kind: str, folder: Path) -> Path:
    """A 2-layer BERT (token types) or RoBERTa (type_vocab_size 1) pair classifier with random
    weights, large enough to disagree across inputs, and the tiny WordPiece tokenizer with the
    architecture's pair template."""
    import torch
    from tokenizers import processors
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    tok = tiny.make_tokenizer()
    vocab = tok.get_vocab()
    if kind == "roberta":  # <s> A </s></s> B </s>, every token of segment 0
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=tiny.MAX_LENGTH,
        # What the architecture's tokenizer returns: BERT's token types, RoBERTa's none.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"]
        if kind == "bert"
        else ["input_ids", "attention_mask"],
    ).save_pretrained(str(folder))
    common: dict[str, Any] = {
        "vocab_size": tok.get_vocab_size(),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "initializer_range": 0.4,
        "id2label": dict(enumerate(LABELS)),
        "label2id": {name: i for i, name in enumerate(LABELS)},
        "pad_token_id": 0,
    }
    torch.manual_seed(3)
    if kind == "bert":
        config: Any = BertConfig(
            max_position_embeddings=tiny.MAX_LENGTH, type_vocab_size=2, **common
        )
        model: Any = BertForSequenceClassification(config)
    else:
        config = RobertaConfig(
            max_position_embeddings=tiny.MAX_LENGTH + 2, type_vocab_size=1, **common
        )
        model = RobertaForSequenceClassification(config)
    model.eval()
    model.save_pretrained(str(folder))
    return folder


def pairs_tsv(path: Path) -> Path:
    rows = ["text\ttext_pair\tlabel"]
    for i, pair in enumerate(PAIRS[:7] * 3):
        rows.append(f"{pair['text']}\t{pair['text_pair']}\t{LABELS[i % 3]}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module", params=["bert", "roberta"])
def models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import pipeline

    tmp = tmp_path_factory.mktemp(f"pair-{request.param}")
    source = make_pair_model(request.param, tmp / "hub")
    out = tmp / "built"
    gate = Gate(max_accuracy_drop=100.0, min_agreement=0.0)  # random weights: shape, not skill
    build(
        BuildOptions(
            model=str(source),
            target="none",
            out=out,
            eval_path=pairs_tsv(tmp / "eval.tsv"),
            gate=gate,
        )
    )
    pipe = pipeline("text-classification", model=str(source), device="cpu")
    return request.param, pipe, make_handler(out, max_texts=16), out


@pytest.mark.parametrize(("inputs", "kwargs"), CALLS)
def test_pairs_answer_as_the_pipeline(models: Any, inputs: Any, kwargs: dict[str, Any]) -> None:
    _, pipe, handler, _ = models
    theirs = pipe(inputs, truncation=True, **kwargs)
    code, ours, _ = call(handler, http_event({"inputs": inputs, "parameters": kwargs}))
    assert code == 200, ours
    same_as_pipeline(ours, theirs)


def test_the_inputs_the_model_sees_are_the_tokenizers(models: Any) -> None:
    """Token type ids where the model has them (BERT's second segment is 1), none where it does
    not (RoBERTa's graph declares none); the longer member is cut first."""
    kind, pipe, _, out = models
    from handler.inference import Classifier

    clf = Classifier.from_dir(out)
    assert ("token_type_ids" in clf.input_names) == (kind == "bert")
    enc = clf.tokenizer.encode([("good plot", "awful and dull")])[0]
    theirs = pipe.tokenizer("good plot", "awful and dull")
    assert enc.ids == theirs["input_ids"]
    if kind == "bert":
        assert enc.type_ids == theirs["token_type_ids"] and 1 in enc.type_ids
    cut = clf.tokenizer.encode([(LONG, "awful plot")])[0]
    assert cut.truncated and cut.length == tiny.MAX_LENGTH
    assert cut.ids == pipe.tokenizer(LONG, "awful plot", truncation=True)["input_ids"]


def test_the_answers_differ_so_the_comparison_means_something(models: Any) -> None:
    _, pipe, _, _ = models
    scores = {round(a["score"], 3) for a in pipe(PAIRS, truncation=True)}
    assert len(scores) > 3


def test_the_gate_measured_pairs(models: Any) -> None:
    """The build's gate scored every line of its pair TSV (that they are read as pairs, not as
    texts with a tab: test_pair_files_are_read_as_pairs)."""
    _, _, _, out = models
    verification = json.loads((out / "manifest.json").read_text())["verification"]
    assert verification["n"] + verification["selection"]["n"] == 21
    assert verification["eval_source"].endswith("eval.tsv")


def test_pair_files_are_read_as_pairs(tmp_path: Path) -> None:
    from handler.datafiles import read_labelled, read_texts
    from handler.errors import InvalidInput

    data = read_labelled(pairs_tsv(tmp_path / "eval.tsv"), dict(enumerate(LABELS)))
    assert data.texts[0] == (PAIRS[0]["text"], PAIRS[0]["text_pair"]) and data.labels[:3] == [
        0,
        1,
        2,
    ]
    single = tmp_path / "single.tsv"
    single.write_text("sentence\tlabel\na text\twith a tab inside\t1\n")
    assert read_labelled(single, dict(enumerate(LABELS))).texts == ["a text\twith a tab inside"]
    broken = tmp_path / "broken.tsv"
    broken.write_text("text\ttext_pair\tlabel\nno pair here\t1\n")
    with pytest.raises(InvalidInput, match=r"broken\.tsv:2: a file of pairs"):
        read_labelled(broken, dict(enumerate(LABELS)))
    unlabelled = tmp_path / "agreement.txt"
    unlabelled.write_text("text\ttext_pair\nis it good\tit is good\n\nwhy\tbecause\n")
    assert read_texts(unlabelled) == [("is it good", "it is good"), ("why", "because")]
