"""A tiny, real text classifier the suite builds itself: a WordPiece tokenizer made with
`tokenizers` and a small ONNX graph (embedding -> masked mean -> linear) whose embeddings carry
sentiment on purpose, so simple texts get the expected label. Any fresh clone can run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "love", "loved", "wonderful", "excellent", "fun", "best"]
NEGATIVE = ["bad", "awful", "hate", "hated", "boring", "terrible", "worst", "dull"]
NEUTRAL = [
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
    "i",
    "very",
    ".",
    ",",
    "!",
    "not",
    "##s",
    "##ing",
    "##ed",
    "café",
    "日",
    "本",
]
MAX_LENGTH = 32
DIM = 16


def make_tokenizer() -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def make_graph(
    vocab_size: int, num_labels: int, token_type_ids: bool, seed: int = 0
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 0.05, (vocab_size, DIM)).astype(np.float32)
    first_pos = len(SPECIAL)
    emb[first_pos : first_pos + len(POSITIVE), 0] = 4.0
    emb[first_pos + len(POSITIVE) : first_pos + len(POSITIVE) + len(NEGATIVE), 0] = -4.0
    weight = rng.normal(0, 0.1, (DIM, num_labels)).astype(np.float32)
    if num_labels >= 2:
        weight[0, 0], weight[0, 1] = -1.5, 1.5
    bias = np.zeros(num_labels, dtype=np.float32)
    inits = [
        numpy_helper.from_array(emb, "word_embeddings"),
        numpy_helper.from_array(weight, "classifier_weight"),
        numpy_helper.from_array(bias, "classifier_bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    dims = ["batch_size", "sequence_length"]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
    ]
    nodes = [helper.make_node("Gather", ["word_embeddings", "input_ids"], ["tok_emb"])]
    hidden = "tok_emb"
    if token_type_ids:
        types = rng.normal(0, 0.05, (2, DIM)).astype(np.float32)
        inits.append(numpy_helper.from_array(types, "token_type_embeddings"))
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, dims))
        nodes += [
            helper.make_node("Gather", ["token_type_embeddings", "token_type_ids"], ["type_emb"]),
            helper.make_node("Add", ["tok_emb", "type_emb"], ["emb"]),
        ]
        hidden = "emb"
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", [hidden, "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "classifier_weight"], ["projected"]),
        helper.make_node("Add", ["projected", "classifier_bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-classifier",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", num_labels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_hub_folder(
    folder: Path,
    num_labels: int = 2,
    token_type_ids: bool = False,
    labels: list[str] | None = None,
    problem_type: str | None = None,
) -> Path:
    """A model folder in the hub's layout: config.json, tokenizer files, onnx/model.onnx."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    names = labels or (
        ["NEGATIVE", "POSITIVE"] if num_labels == 2 else [f"LABEL_{i}" for i in range(num_labels)]
    )
    config = {
        "architectures": ["TinyForSequenceClassification"],
        "model_type": "tiny",
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "max_position_embeddings": MAX_LENGTH,
        "pad_token_id": 0,
    }
    if problem_type:
        config["problem_type"] = problem_type
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": MAX_LENGTH, "pad_token": "[PAD]", "do_lower_case": True})
    )
    (folder / "onnx").mkdir(exist_ok=True)
    model = make_graph(tok.get_vocab_size(), num_labels, token_type_ids)
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    return folder


def write_eval(path: Path, labels: list[str] | None = None) -> Path:
    """Labelled lines the tiny model gets right, for its build gate."""
    neg_name, pos_name = (labels or ["NEGATIVE", "POSITIVE"])[:2]
    rows = []
    for i, (pos, neg) in enumerate(zip(POSITIVE, NEGATIVE, strict=True)):
        rows.append(f"the movie was {pos} .\t1")
        rows.append(f"it is {neg} and {NEGATIVE[(i + 1) % len(NEGATIVE)]}\t0")
        rows.append(f"i {pos} this film , {POSITIVE[(i + 3) % len(POSITIVE)]} plot\t{pos_name}")
        rows.append(f"{neg} plot !\t{neg_name}")
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return path
