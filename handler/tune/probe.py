"""One measurement in a fresh process, as one Lambda execution environment would see it:

    python -m handler.tune.probe api|batch TEXTS_JSON REPEATS

The environment names the model (MODEL_DIR) and the memory size
(AWS_LAMBDA_FUNCTION_MEMORY_SIZE), so the function picks its threads as it does on Lambda. The
process imports the real entry point (its init), prints `ready`, then, for `api`, sends each text
as its own HTTP API request through `lambda_handler` and prints the latencies; for `batch`,
classifies the texts in the S3 path's chunks and prints the elapsed time. The parent times the
init from spawn to `ready`, the interpreter's start included, as Lambda bills it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from handler.inference.tokenizer import TextInput

READY = "tune: ready"
RESULT = "tune: result "


LONG_ROWS = 16  # texts of the model's full length timed for the request budget's worst case


def max_length_rate(classifier: Any, texts: Sequence[TextInput]) -> dict[str, Any]:
    """Tokens per second when every text is as long as the model reads (the costliest tokens:
    attention grows with length), from the user's own words: what MAX_REQUEST_TOKENS is set by."""
    tok = classifier.tokenizer
    joined = " ".join(t if isinstance(t, str) else " ".join(t) for t in texts)
    while not tok.encode([joined])[0].truncated and len(joined) < 10_000_000:
        joined = f"{joined} {joined}"
    words = joined.split()
    step = max(1, len(words) // LONG_ROWS)
    rows = [" ".join(words[i:] + words[:i]) for i in range(0, len(words), step)]
    rows = rows[:LONG_ROWS]
    encoded = tok.encode(rows)
    classifier.answer(rows[:2], encoded[:2])  # warm at this shape
    start = time.perf_counter()
    classifier.answer(rows, encoded)  # as the API runs them
    seconds = time.perf_counter() - start
    return {"long_tokens": sum(e.length for e in encoded), "long_seconds": seconds}


def main(argv: list[str]) -> int:
    role, texts, repeats = argv[0], json.loads(argv[1]), int(argv[2])
    from handler import entry
    from handler.local.context import LocalContext
    from handler.local.gateway import http_api_event

    print(READY, flush=True)
    fn = entry.function
    # Texts the function would refuse (nothing the vocabulary knows) are not timed: a 422 is not
    # what a size is chosen for. The parent reports how many were left out.
    readable = [
        t
        for t, e in zip(texts, fn.model.classifier.tokenizer.encode(texts), strict=True)
        if e.problem is None
    ]
    if not readable:
        raise SystemExit("none of the texts can be read by this model's vocabulary")
    out: dict[str, Any] = {"threads": fn.settings.num_threads}
    out["unreadable"] = len(texts) - len(readable)
    texts = readable
    if role == "api":
        headers = {"content-type": "application/json"}
        long_text = fn.settings.long_text  # LONG_TEXT: the API's requests ask for it too
        params = {} if long_text == "truncate" else {"parameters": {"long_text": long_text}}
        events = [
            http_api_event(
                "POST", "/classify", headers, json.dumps({"inputs": t, **params}).encode(), "tune"
            )
            for t in texts
        ]
        latencies = []
        entry.lambda_handler(events[0], LocalContext())  # the first request pays one-off costs
        for _ in range(repeats):
            for event in events:
                start = time.perf_counter()
                answer = entry.lambda_handler(event, LocalContext())
                latencies.append((time.perf_counter() - start) * 1000)
                if answer.get("statusCode") != 200:
                    raise SystemExit(f"the function answered {answer.get('statusCode')}")
        out["latencies_ms"] = latencies
    else:
        from handler.batch.formats import Record
        from handler.batch.job import LongTexts, classify_chunk

        records = [Record(i + 1, text=t) for i, t in enumerate(texts * repeats)]
        size = fn.settings.batch_chunk_size
        classifier = fn.model.classifier
        how = LongTexts(fn.settings.long_text, fn.settings.max_windows_per_text)
        classify_chunk(classifier, records[:size], None, how)  # warm, as the first object would
        start = time.perf_counter()
        for i in range(0, len(records), size):
            classify_chunk(classifier, records[i : i + size], None, how)
        out["texts"], out["seconds"] = len(records), time.perf_counter() - start
        out.update(max_length_rate(classifier, texts))
    print(RESULT + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
