"""Any Hugging Face text classifier: tiny generated models of the BERT, RoBERTa, XLM-R
(Unigram), DeBERTa-v2 and DistilBERT families, with trained tokenizers and random weights, built
from their PyTorch weights (no onnx/model.onnx), compared with transformers' pipeline on every
call shape through lambda_handler, and served a text past their max length. Also the gate for
regression and multi-label heads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.compiler.gate import Gate
from handler.compiler.pipeline import BuildOptions, build
from handler.datafiles import read_labelled
from handler.errors import BuildError, GateFailed
from handler.inference import Classifier
from tests.api.helpers import call, http_event, make_handler

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("transformers") is None,
        reason="export needs torch and transformers (pip install '.[torch]')",
    ),
]

WORDS = [
    "good",
    "great",
    "love",
    "wonderful",
    "excellent",
    "fun",
    "best",
    "bad",
    "awful",
    "hate",
    "boring",
    "terrible",
    "worst",
    "dull",
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "it",
    "this",
    "and",
    "plot",
    "very",
    "not",
    "really",
    "quite",
    "story",
    "acting",
    "music",
]
CORPUS = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)]
TEXTS = ["great fun , the best film", "a boring and awful plot", "the music", "Café 東京 ok"]
CALLS: list[tuple[Any, dict[str, Any]]] = [
    (TEXTS[0], {}),
    (TEXTS, {}),
    (TEXTS[1], {"top_k": None}),
    (TEXTS, {"top_k": None}),
    (TEXTS, {"top_k": 1}),
    (TEXTS, {"top_k": 2, "function_to_apply": "sigmoid"}),
    (TEXTS[2], {"function_to_apply": "none"}),
    (TEXTS, {"top_k": None, "function_to_apply": "softmax"}),
]
LONG = " ".join(["wonderful film"] * 200)  # far past every model's max length


def _wordpiece() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return tok, {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }


def _byte_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids: pad is 1
    trainer = BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok, {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "cls_token": "<s>",
        "sep_token": "</s>",
    }


def _unigram(specials: list[str], cls: str, sep: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token=specials[3])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok


def make_family(name: str, root: Path) -> Path:
    """A hub-layout folder with PyTorch weights only (no onnx/): config, weights, tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerFast

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    labels = {0: "anger", 1: "joy", 2: "surprise"}
    common = dict(id2label=labels, label2id={v: k for k, v in labels.items()})
    max_length: int | None = 64

    def roberta_like(kind: str, tok: Any) -> Any:
        # Positions offset by pad_token_id + 1: 66 positions give 64 usable tokens.
        return AutoConfig.for_model(
            kind,
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=66,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **small,
            **common,
        )

    if name == "bert":
        tok, special = _wordpiece()
        config = AutoConfig.for_model(
            "bert",
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=64,
            type_vocab_size=2,
            **small,
            **common,
        )
    elif name == "distilbert":
        tok, special = _wordpiece()
        config = AutoConfig.for_model(
            "distilbert",
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=64,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            **common,
        )
    elif name == "roberta":
        tok, special = _byte_bpe()
        # No model_max_length: the usable length must come from the positions (66 - 2).
        max_length = None
        config = roberta_like(name, tok)
    elif name == "xlm-roberta":
        tok = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s>", "</s>")
        special = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "cls_token": "<s>",
            "sep_token": "</s>",
        }
        max_length = None
        config = roberta_like(name, tok)
    elif name == "deberta-v2":
        tok = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS]", "[SEP]")
        special = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
        config = AutoConfig.for_model(
            "deberta-v2",
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=64,
            type_vocab_size=0,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            position_buckets=16,
            pad_token_id=0,
            **small,
            **common,
        )
    else:
        raise AssertionError(name)
    folder = root / name
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)  # type: ignore[no-untyped-call]
    if max_length is not None:
        fast.model_max_length = max_length
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    model.train(False)
    model.save_pretrained(str(folder))
    return folder


def _eval_file(path: Path) -> Path:
    rows = [f"{text}\t{i % 3}" for i, text in enumerate(CORPUS[:60])]
    path.write_text("\n".join(rows) + "\n")
    return path


FAMILIES = ["bert", "distilbert", "roberta", "xlm-roberta", "deberta-v2"]
NO_GATE = Gate(max_accuracy_drop=100.0, min_agreement=0.0)  # random weights: labels mean nothing


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("families")
    data = _eval_file(root / "eval.tsv")
    out: dict[str, dict[str, Path]] = {}
    for name in FAMILIES:
        src = make_family(name, root / "src")
        built = root / "built" / name
        build(BuildOptions(model=str(src), target="none", out=built, eval_path=data, gate=NO_GATE))
        out[name] = {"source": src, "built": built}
    return out


def _same(ours: Any, theirs: Any, where: str) -> None:
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for a, b in zip(ours, theirs, strict=True):
            _same(a, b, where)
    else:
        assert ours["label"] == theirs["label"], where
        assert abs(ours["score"] - theirs["score"]) < 1e-4, where


@pytest.mark.parametrize("name", FAMILIES)
def test_fp32_build_answers_as_the_pipeline_on_every_call_shape(
    name: str, families: dict[str, dict[str, Path]]
) -> None:
    from transformers import pipeline

    paths = families[name]
    manifest = json.loads((paths["built"] / "manifest.json").read_text())
    expected_inputs = ["input_ids", "attention_mask"] + (
        ["token_type_ids"] if name == "bert" else []
    )
    assert manifest["graph_inputs"] == expected_inputs
    assert manifest["labels"] == ["anger", "joy", "surprise"]
    pipe = pipeline("text-classification", model=str(paths["source"]), device="cpu")
    handler = make_handler(paths["built"])
    for inputs, params in CALLS:
        theirs = pipe(inputs, truncation=True, **params)
        status, ours, _ = call(handler, http_event({"inputs": inputs, "parameters": params}))
        assert status == 200, ours
        _same(ours, theirs, f"{name} {inputs!r} {params}")


# The attention fusion (handler/compiler/attention.py) on each family's export: DeBERTa's
# disentangled attention adds position terms to the scores, which MultiHeadAttention cannot
# compute, so it must stay unfused (by the matcher or, failing that, by the logits check).
FUSED_ATTENTION = {"bert": 2, "distilbert": 2, "roberta": 2, "xlm-roberta": 2, "deberta-v2": 0}


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_cores_become_multihead_attention_where_it_computes_the_same(
    name: str, families: dict[str, dict[str, Path]]
) -> None:
    import onnx

    manifest = json.loads((families[name]["built"] / "manifest.json").read_text())
    graph = onnx.load(str(families[name]["built"] / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert manifest["fusions"].get("MultiHeadAttention", 0) == FUSED_ATTENTION[name]
    assert ops.count("MultiHeadAttention") == FUSED_ATTENTION[name]
    if FUSED_ATTENTION[name]:
        assert "Softmax" not in ops  # no attention core left over


@pytest.mark.parametrize("name", FAMILIES)
def test_a_text_past_the_max_length_is_truncated_and_flagged_never_a_500(
    name: str, families: dict[str, dict[str, Path]]
) -> None:
    from transformers import pipeline

    paths = families[name]
    manifest = json.loads((paths["built"] / "manifest.json").read_text())
    assert manifest["max_length"] == 64, manifest["max_length_from"]
    if name in ("roberta", "xlm-roberta"):
        assert manifest["max_length_from"]["position_offset"] == 2
    handler = make_handler(paths["built"])
    status, body, headers = call(handler, http_event({"inputs": [TEXTS[0], LONG]}))
    assert status == 200, body
    assert headers.get("x-truncated-inputs") == "1"
    pipe = pipeline("text-classification", model=str(paths["source"]), device="cpu")
    theirs = pipe([TEXTS[0], LONG], truncation=True, max_length=64)
    _same(body, theirs, f"{name} long")


def test_export_failure_is_a_clear_error_naming_the_model_type(tmp_path: Path) -> None:
    src = make_family("bert", tmp_path)
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download
    with pytest.raises(
        BuildError, match=r"cannot export model type 'bert' \(BertForSequenceClassification\)"
    ):
        build(
            BuildOptions(
                model=str(src),
                target="none",
                out=tmp_path / "o",
                eval_path=_eval_file(tmp_path / "e.tsv"),
            )
        )


def _with_head(src: Path, **config: Any) -> Path:
    """The same BERT body with another head: regression (1 output) or multi-label."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(str(src), **config)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(cfg)  # type: ignore[no-untyped-call]
    model.train(False)
    model.save_pretrained(str(src))
    return src


def test_regression_gate_measures_output_error(tmp_path: Path) -> None:
    src = _with_head(
        make_family("bert", tmp_path),
        problem_type="regression",
        id2label={0: "score"},
        label2id={"score": 0},
    )
    data = tmp_path / "scores.tsv"
    data.write_text(
        "text\tscore\n" + "".join(f"{t}\t{i / 10:.2f}\n" for i, t in enumerate(CORPUS[:60]))
    )
    assert read_labelled(data, {0: "score"}, "regression").labels[:2] == [0.0, 0.1]
    manifest = build(
        BuildOptions(model=str(src), target="x86-avx2", out=tmp_path / "o", eval_path=data)
    )
    v = manifest["verification"]
    assert v["task"] == manifest["task"] == "regression"
    assert {"reference_mae", "candidate_mae", "mean_score_diff", "max_score_diff"} <= set(v)
    assert "agreement" not in v
    assert v["gate"]["max_regression_mean_abs_diff"] > 0 and v["failed"] == []
    # The gate really checks it: a threshold no int8 graph can meet fails the build.
    with pytest.raises(GateFailed, match="regression_error"):
        build(
            BuildOptions(
                model=str(src),
                target="x86-avx2",
                out=tmp_path / "p",
                eval_path=data,
                gate=Gate(max_regression_error=1e-9),
            )
        )


def test_multi_label_gate_measures_decisions_per_label(tmp_path: Path) -> None:
    src = _with_head(make_family("bert", tmp_path), problem_type="multi_label_classification")
    data = tmp_path / "multi.tsv"
    rows = [
        f"{t}\t{','.join(['anger', 'joy', 'surprise'][: i % 4])}" for i, t in enumerate(CORPUS[:60])
    ]
    data.write_text("text\tlabels\n" + "\n".join(rows) + "\n")
    labelled = read_labelled(data, {0: "anger", 1: "joy", 2: "surprise"}, "multi_label")
    assert labelled.labels[:4] == [[], [0], [0, 1], [0, 1, 2]]
    manifest = build(
        BuildOptions(
            model=str(src),
            target="x86-avx2",
            out=tmp_path / "o",
            eval_path=data,
            gate=Gate(max_accuracy_drop=100.0, min_agreement=0.9),
        )
    )
    v = manifest["verification"]
    assert v["task"] == "multi_label"
    assert 0.9 <= v["agreement"] <= 1.0 and "texts_with_every_decision_agreeing" in v
    clf = Classifier.from_dir(tmp_path / "o")
    sig = clf.answer(CORPUS[:5]).scores
    assert np.all((sig >= 0) & (sig <= 1))  # sigmoid per label, not a softmax over labels


@pytest.mark.parametrize("name", FAMILIES)
def test_the_last_layer_runs_on_the_token_the_head_reads(
    name: str, families: dict[str, dict[str, Path]]
) -> None:
    """handler/compiler/read_token.py: every family's head reads token 0 of the last hidden
    state, so the last layer's feed-forward block runs on one row per text (the answers against
    transformers' pipeline are checked above)."""
    import onnx

    manifest = json.loads((families[name]["built"] / "manifest.json").read_text())
    moved = manifest["fusions"].get("last_layer_on_selected_token", 0)
    graph = onnx.load(str(families[name]["built"] / "model.onnx")).graph
    sliced = [n for n in graph.node if n.op_type == "Slice" and n.name.endswith("/slice")]
    # Output projection, bias, residual, LayerNorm, FFN in, GELU (with its bias, or two nodes
    # where GELU is left unfused), FFN out, bias, residual, LayerNorm: after the attention's
    # output and the layer's input, sliced to token 0.
    assert moved == 10
    assert len(sliced) == 2
