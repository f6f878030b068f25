"""A repository with no onnx/model.onnx is exported from its PyTorch weights: a small BERT-style
model (token_type_ids) made from a config, saved in the hub's layout, built and served."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from handler.compiler.pipeline import BuildOptions, build
from handler.inference import Classifier
from tests import tiny

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("transformers") is None,
        reason="export needs torch and transformers (pip install '.[torch]')",
    ),
]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("bert")
    tok = tiny.make_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 64, "pad_token": "[PAD]"})
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        id2label={0: "neg", 1: "pos", 2: "mixed"},
        label2id={"neg": 0, "pos": 1, "mixed": 2},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.train(False)
    model.save_pretrained(str(folder))
    return folder


def test_bert_export_feeds_token_type_ids_and_matches_torch(
    bert_folder: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    assert not (bert_folder / "onnx").exists()
    rows = [
        f"{t}\t{i % 3}"
        for i, t in enumerate(["good film", "bad plot", "the movie", "great fun"] * 5)
    ]
    eval_tsv = tmp_path / "eval.tsv"
    eval_tsv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    manifest = build(
        BuildOptions(model=str(bert_folder), target="none", out=out, eval_path=eval_tsv)
    )
    assert manifest["source"]["onnx"] == "exported from PyTorch weights"
    assert manifest["graph_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["labels"] == ["neg", "pos", "mixed"]

    clf = Classifier.from_dir(out)
    texts = ["good film", "the plot was bad and dull , not fun"]
    ours = np.stack([r.logits for r in clf.answer(texts).results])
    model = AutoModelForSequenceClassification.from_pretrained(str(bert_folder)).eval()
    with torch.no_grad():
        for text, row in zip(texts, ours, strict=True):
            enc = clf.tokenizer.encode([text])[0]
            ids = torch.tensor([enc.ids])
            expected = (
                model(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    token_type_ids=torch.tensor([enc.type_ids]),
                )
                .logits[0]
                .numpy()
            )
            np.testing.assert_allclose(row, expected, atol=1e-4)
    assert len(clf.predict("good", top_k=None)) == 3
