"""Classifier on the tiny self-made models: the pipeline contract, labels, inputs, truncation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from handler.errors import ArtifactError, InvalidInput
from handler.inference import Classifier
from tests import tiny
from tests.conftest import build_tiny


@pytest.fixture(scope="module")
def clf(tiny_model: Path) -> Classifier:
    return Classifier.from_dir(tiny_model)


def test_string_gives_list_of_one_dict(clf: Classifier) -> None:
    out = clf.predict("the movie was great and fun")
    assert isinstance(out, list) and len(out) == 1
    assert set(out[0]) == {"label", "score"}
    assert out[0]["label"] == "POSITIVE"
    assert 0.5 < out[0]["score"] <= 1.0


def test_list_gives_one_dict_per_text_in_order(clf: Classifier) -> None:
    out = clf.predict(["awful boring plot", "i loved it , great", "terrible"])
    assert [d["label"] for d in out] == ["NEGATIVE", "POSITIVE", "NEGATIVE"]


def test_top_k_none_gives_all_labels_sorted(clf: Classifier) -> None:
    out = clf.predict("good", top_k=None)
    assert [d["label"] for d in out] == ["POSITIVE", "NEGATIVE"]
    assert out[0]["score"] >= out[1]["score"]
    assert sum(d["score"] for d in out) == pytest.approx(1.0, abs=1e-6)
    nested = clf.predict(["good", "bad"], top_k=None)
    assert [len(a) for a in nested] == [2, 2]
    assert nested[1][0]["label"] == "NEGATIVE"


def test_top_k_one_on_a_list_nests(clf: Classifier) -> None:
    out = clf.predict(["good", "bad"], top_k=1)
    assert [[d["label"] for d in a] for a in out] == [["POSITIVE"], ["NEGATIVE"]]
    assert clf.predict("good", top_k=1) == [clf.predict("good")[0]]


def test_function_to_apply(clf: Classifier) -> None:
    logits = clf.answer(["good"]).results[0].logits
    raw = clf.predict("good", top_k=None, function_to_apply="none")
    assert sorted(d["score"] for d in raw) == pytest.approx(sorted(logits.tolist()))
    sig = clf.predict("good", top_k=None, function_to_apply="sigmoid")
    assert sorted(d["score"] for d in sig) == pytest.approx(
        sorted((1 / (1 + np.exp(-logits))).tolist())
    )
    assert clf.predict("good", function_to_apply="SOFTMAX") == clf.predict("good")


@pytest.mark.parametrize("bad", [0, -1, True, "2"])
def test_bad_top_k(clf: Classifier, bad: object) -> None:
    with pytest.raises(InvalidInput, match="top_k"):
        clf.predict("good", top_k=bad)  # type: ignore[arg-type]


def test_bad_function(clf: Classifier) -> None:
    with pytest.raises(InvalidInput, match="function_to_apply"):
        clf.predict("good", function_to_apply="relu")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("", "input 0 is empty"),
        (["good", "   \n\t"], "input 1 is empty"),
        (["good", 3], "input 1 is int"),
        ([None], "input 0 is null"),
        (["bad \ud800"], "lone surrogate"),
    ],
)
def test_invalid_texts_are_named(clf: Classifier, inputs: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        clf.predict(inputs)  # type: ignore[arg-type]


def test_empty_list_gives_empty_answer(clf: Classifier) -> None:
    assert clf.predict([]) == []


def test_long_text_is_truncated_and_says_so(clf: Classifier) -> None:
    long = "great " * 5000
    result = clf.answer([long, "good"]).results
    assert result[0].truncated and result[0].num_tokens == tiny.MAX_LENGTH
    assert not result[1].truncated and result[1].num_tokens == 3
    assert clf.predict(long)[0]["label"] == "POSITIVE"


def test_unicode_and_control_characters(clf: Classifier) -> None:
    out = clf.predict(["café 日本 great 😀", "bad\x00\x07 \u200b awful", "ÉNORME good"])
    assert [d["label"] for d in out] == ["POSITIVE", "NEGATIVE", "POSITIVE"]


def test_int8_predictions_do_not_depend_on_batch_mates(clf: Classifier) -> None:
    # Per-token int8 runs in padded micro-batches; each token's scale is its own.
    assert clf.config.batching == "padded"
    texts = ["good", "awful boring plot and a bad film " * 3, "i loved the plot", "dull"] * 5
    together = clf.answer(texts).scores
    alone = np.concatenate([clf.answer([t]).scores for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert (together.argmax(1) == alone.argmax(1)).all()


def test_fp32_padded_batches_are_invariant(tiny_fp32_model: Path) -> None:
    clf = Classifier.from_dir(tiny_fp32_model)
    assert clf.config.batching == "padded"
    texts = ["good", "awful boring plot and a bad film " * 3, "i loved the plot", "dull"] * 20
    together = clf.answer(texts).scores
    alone = np.concatenate([clf.answer([t]).scores for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_three_labels_from_id2label(tmp_path: Path) -> None:
    out = build_tiny(tmp_path, num_labels=3, labels=["anger", "joy", "calm"])
    clf = Classifier.from_dir(out)
    answer = clf.predict("good", top_k=None)
    assert sorted(d["label"] for d in answer) == ["anger", "calm", "joy"]
    assert sum(d["score"] for d in answer) == pytest.approx(1.0, abs=1e-5)


def test_multi_label_defaults_to_sigmoid(tmp_path: Path) -> None:
    out = build_tiny(tmp_path, target="none", problem_type="multi_label_classification")
    clf = Classifier.from_dir(out)
    logits = clf.answer(["good"]).results[0].logits
    answer = clf.predict("good", top_k=None)
    assert sorted(d["score"] for d in answer) == pytest.approx(
        sorted((1 / (1 + np.exp(-logits))).tolist()), abs=1e-6
    )


def test_token_type_ids_are_fed_when_declared(tmp_path: Path) -> None:
    out = build_tiny(tmp_path, token_type_ids=True)
    clf = Classifier.from_dir(out)
    assert clf.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert clf.predict("great fun")[0]["label"] == "POSITIVE"


def test_stored_tokenizer_settings_are_not_trusted(tiny_model: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_model / "tokenizer.json").read_text())
    data["truncation"] = None
    data["padding"] = {
        "strategy": {"Fixed": 64},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    copy = tmp_path / "model"
    copy.mkdir()
    for p in tiny_model.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "tokenizer.json").write_text(json.dumps(data))
    clf = Classifier.from_dir(copy)
    res = clf.answer(["good", "great " * 100]).results
    assert res[0].num_tokens == 3 and res[1].num_tokens == tiny.MAX_LENGTH and res[1].truncated


def test_missing_files_are_named(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"config\.json missing"):
        Classifier.from_dir(tmp_path)
    (tmp_path / "config.json").write_text((tiny_model / "config.json").read_text())
    with pytest.raises(ArtifactError, match=r"missing model\.onnx"):
        Classifier.from_dir(tmp_path)
