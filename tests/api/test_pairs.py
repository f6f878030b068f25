"""Text pairs on the API and in S3 batch, on the tiny model (no transformers needed): the
pipeline's shapes, errors that name the member at fault, and records with `text_pair`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handler.inference import Classifier
from tests.api.helpers import call, http_event, make_handler

PAIR = {"text": "the movie was good", "text_pair": "awful and dull"}


@pytest.fixture(scope="module")
def handler(tiny_model: Path) -> Any:
    return make_handler(tiny_model, max_texts=8)


def test_one_pair_answers_one_answer_and_a_list_one_each(handler: Any) -> None:
    code, one, _ = call(handler, http_event({"inputs": PAIR}))
    assert code == 200 and isinstance(one, dict) and set(one) == {"label", "score"}
    code, many, _ = call(handler, http_event({"inputs": [PAIR, "great", {"text": "dull"}]}))
    assert code == 200 and [type(a) for a in many] == [dict, dict, dict]
    assert many[0] == one
    code, top, _ = call(handler, http_event({"inputs": PAIR, "parameters": {"top_k": None}}))
    assert code == 200 and isinstance(top, list) and len(top) == 2
    code, hub, _ = call(handler, http_event({"inputs": PAIR}, path="/"))
    assert code == 200 and isinstance(hub, list) and isinstance(hub[0], list)


def test_a_pair_is_not_its_text_alone(tiny_model: Path) -> None:
    clf = Classifier.from_dir(tiny_model)
    pair = clf.answer([("the movie was good", "awful and dull")]).results[0]
    alone = clf.answer(["the movie was good"]).results[0]
    assert pair.num_tokens > alone.num_tokens
    assert not (pair.logits == alone.logits).all()


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({"text": "good", "text_pair": "  "}, "text_pair"),
        ({"text": "", "text_pair": "good"}, "text"),
        ({"text": "good", "text_pair": "bad", "max_length": 3}, "max_length"),
        ({"text_pair": "good"}, "text"),
        ({"text": "good", "text_pair": 7}, "text_pair"),
    ],
)
def test_a_bad_pair_is_a_422_naming_the_member(handler: Any, inputs: Any, says: str) -> None:
    code, got, _ = call(handler, http_event({"inputs": [inputs]}))
    assert code == 422 and says in json.dumps(got)


def test_pair_records_in_jsonl_and_csv(tiny_model: Path) -> None:
    import io

    from handler.batch.formats import Reader
    from handler.batch.job import classify_chunk

    clf = Classifier.from_dir(tiny_model)
    jsonl = (
        json.dumps({"id": 1, **PAIR})
        + "\n"
        + json.dumps({"id": 2, "text": "good", "text_pair": ""})
        + "\n"
        + json.dumps({"id": 3, "text": "good", "text_pair": None})
        + "\n"
        + json.dumps({"id": 4, "text": "good", "text_pair": ["x"]})
        + "\n"
    )
    records = list(Reader(io.BytesIO(jsonl.encode()), ".jsonl", False))
    lines, _ = classify_chunk(clf, records)
    assert lines[0]["label"] in ("POSITIVE", "NEGATIVE")
    assert lines[1]["error"].startswith("'text_pair' is empty")
    assert "label" in lines[2]  # null: a single text
    assert lines[3]["error"].startswith("'text_pair' is list")
    expected = clf.predict({"text": PAIR["text"], "text_pair": PAIR["text_pair"]})
    assert lines[0]["score"] == expected["score"]
    csv = 'id,text,text_pair\n1,"the movie was good","awful and dull"\n2,good,\n'
    rows = list(Reader(io.BytesIO(csv.encode()), ".csv", False))
    lines, _ = classify_chunk(clf, rows)
    assert lines[0]["score"] == expected["score"] and "'text_pair' is empty" in lines[1]["error"]
