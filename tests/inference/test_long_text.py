"""`long_text: windows`: a text longer than the model reads is read whole, in overlapping windows
cut by the model's own tokenizer, and its windows' scores are averaged; a text that fits gets
today's answer, bit for bit; windows share micro-batches and stay batch-invariant."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from handler.errors import InvalidInput
from handler.inference import Classifier
from handler.inference.long_text import Windows, combine
from handler.inference.postprocess import softmax
from tests import tiny
from tests.conftest import build_tiny

LONG = " ".join(["good fun", "the movie", "awful", "boring plot", "a", "loved it"] * 12)
LONG_NEGATIVE = " ".join(["awful", "the plot", "dull", "worst movie", "good"] * 14)
SHORT = ["good", "awful boring plot", "i loved the plot", "dull"]


@pytest.fixture(scope="module")
def clf(tiny_model: Path) -> Classifier:
    return Classifier.from_dir(tiny_model)


def test_a_text_that_fits_gets_the_truncate_answer_bit_for_bit(clf: Classifier) -> None:
    for text in SHORT:
        truncate = clf.answer([text]).scores
        windows = clf.answer([text], long_text="windows").results
        assert windows[0].windows == 1 and windows[0].window_logits is None
        assert np.array_equal(clf.scores(windows, None), truncate)


def test_fitting_texts_keep_their_answers_beside_long_ones(clf: Classifier) -> None:
    """Batch invariance with windows: the long texts' windows join the same padded
    micro-batches; the short texts' scores are what they are alone."""
    texts = [SHORT[0], LONG, SHORT[1], LONG_NEGATIVE, SHORT[2], SHORT[3]] * 3
    mixed = clf.answer(texts, long_text="windows").scores
    alone = np.concatenate([clf.answer([t], long_text="windows").scores for t in texts])
    np.testing.assert_allclose(mixed, alone, atol=1e-6)
    assert (mixed.argmax(1) == alone.argmax(1)).all()


def with_policy(clf: Classifier, policy: Windows) -> Classifier:
    return Classifier(clf.session, clf.tokenizer, replace(clf.config, long_text=policy))


@pytest.mark.parametrize("overlap", [0, 8])
def test_every_token_of_a_long_text_is_read(clf: Classifier, overlap: int) -> None:
    assert clf.config.long_text.fit(clf.config.max_length).window == tiny.MAX_LENGTH
    clf = with_policy(clf, Windows(tiny.MAX_LENGTH, overlap))
    reading = clf.reading([LONG], clf.encode([LONG]), "windows")
    rows = reading.rows
    assert len(rows) > 1 and all(r.length <= tiny.MAX_LENGTH for r in rows)
    full = clf.tokenizer.clone(None).encode(LONG, add_special_tokens=False).ids
    read = list(rows[0].ids[1:-1])
    for row in rows[1:]:
        body = row.ids[1:-1]
        if overlap:
            assert body[:overlap] == read[-overlap:]  # each repeats the last tokens
        read += body[overlap:]
    assert read == full


@pytest.mark.parametrize("aggregation", ["mean_logits", "mean", "token_weighted"])
def test_the_answer_combines_the_windows(clf: Classifier, aggregation: str) -> None:
    clf = with_policy(clf, Windows(tiny.MAX_LENGTH, 0, aggregation))
    result = clf.answer([LONG], long_text="windows").results[0]
    assert result.windows > 1 and not result.truncated
    reading = clf.reading([LONG], clf.encode([LONG]), "windows")
    each = np.stack([clf.logits([row])[0] for row in reading.rows])
    assert result.window_logits is not None
    np.testing.assert_allclose(result.window_logits, each, atol=1e-6)
    tokens = np.asarray([r.content_tokens for r in reading.rows], dtype=np.float32)
    expected = {
        "mean_logits": softmax(each.mean(0, keepdims=True))[0],
        "mean": softmax(each).mean(0),
        "token_weighted": (softmax(each) * tokens[:, None]).sum(0) / tokens.sum(),
    }[aggregation]
    np.testing.assert_allclose(clf.scores([result], None)[0], expected, atol=1e-6)
    assert result.num_tokens == sum(r.length for r in reading.rows)
    truncate = clf.answer([LONG]).results[0]
    assert truncate.truncated and truncate.windows == 1


def test_the_default_is_the_measured_choice() -> None:
    assert Windows() == Windows(128, 0, "mean_logits")


def test_windows_change_the_answer_when_the_end_disagrees(clf: Classifier) -> None:
    """What the end of a review says counts: a text whose first 32 tokens are positive and whose
    long rest is negative is POSITIVE truncated and NEGATIVE read whole."""
    text = "good great fun loved best " * 6 + "awful dull worst boring terrible " * 30
    assert clf.predict(text)[0]["label"] == "POSITIVE"
    assert clf.predict(text, long_text="windows")[0]["label"] == "NEGATIVE"


def test_a_window_cap_cuts_the_rest_and_flags_it(clf: Classifier) -> None:
    reading = clf.reading([LONG, "good"], clf.encode([LONG, "good"]), "windows", max_windows=2)
    results = clf.infer_reading(reading)
    assert results[0].windows == 2 and results[0].truncated
    assert results[1].windows == 1 and not results[1].truncated


def test_an_unknown_mode_is_refused_by_name(clf: Classifier) -> None:
    with pytest.raises(InvalidInput, match="long_text must be one of truncate, windows"):
        clf.predict("good", long_text="chunks")


def test_windows_assume_no_labels_and_no_vocabulary(tmp_path: Path) -> None:
    out = build_tiny(tmp_path, num_labels=3, labels=["anger", "joy", "calm"])
    clf = Classifier.from_dir(out)
    answer = clf.predict(LONG, top_k=None, long_text="windows")
    assert sorted(d["label"] for d in answer) == ["anger", "calm", "joy"]
    assert sum(d["score"] for d in answer) == pytest.approx(1.0, abs=1e-5)


def test_token_weighted_combination_by_hand() -> None:
    scores = np.asarray([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(combine(scores, [30, 10], "mean"), [0.55, 0.45])
    np.testing.assert_allclose(combine(scores, [30, 10], "token_weighted"), [0.725, 0.275])
    assert Windows(128, 32).fit(64) == Windows(64, 16)
    assert Windows(128, 0).fit(64) == Windows(64, 0)


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ({"window": 128, "overlap": 0, "aggregation": "median"}, "aggregation"),
        ({"window": 2, "overlap": 0, "aggregation": "mean"}, "special tokens"),
        ({"window": 32, "overlap": 30, "aggregation": "mean"}, "overlap"),
    ],
)
def test_windows_a_model_cannot_hold_are_refused_at_load(
    tiny_model: Path, tmp_path: Path, policy: dict[str, object], says: str
) -> None:
    import json
    import shutil

    from handler.errors import ArtifactError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "long_text": policy}))
    with pytest.raises(ArtifactError, match=says):
        Classifier.from_dir(folder)
