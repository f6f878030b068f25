"""python -m handler build | classify | eval | verify | serve | invoke | tune.

Output contract: stdout carries the command's result only (JSON; `tune` prints a table unless
`--json`), so `... | jq` works; logs, metrics, warnings and progress go to stderr. Errors:
`error: ...` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from handler.cli_args import Parser, Shown, existing_file, positive_int, target_name
from handler.errors import ArtifactError, ClassifierError

# Where results go: the process's stdout, captured before main() points sys.stdout at stderr
# (Powertools prints EMF metric lines with print()).
_result_stream: TextIO = sys.stdout
DEFAULT_TUNE_SIZES = (512, 1024, 1769, 3008, 3538)  # handler.tune.DEFAULT_SIZES, unimported


def _print(obj: Any) -> None:
    _result_stream.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    _result_stream.flush()


def _model_dir(args: argparse.Namespace) -> Path:
    """--model, else MODEL_DIR, else the default folder; a folder without a model is an error
    that says where it looked and how to build one."""
    from handler.config import default_model_dir, missing_model_message
    from handler.inference.classifier import RUNTIME_CONFIG

    if args.model:
        folder, origin = Path(args.model), "--model"
    else:
        folder, origin = default_model_dir()
    if not (folder / RUNTIME_CONFIG).is_file():
        raise ArtifactError(missing_model_message(folder, origin, model_option=True))
    return folder


def cmd_build(args: argparse.Namespace) -> int:
    from handler.compiler import gate
    from handler.compiler.agreement import AgreementGate
    from handler.compiler.pipeline import BuildOptions, build, summary

    manifest = build(
        BuildOptions(
            model=args.model,
            revision=args.revision,
            target=args.target,
            out=Path(args.out),
            eval_path=args.eval,
            threads=args.threads,
            verify_on=args.verify_on,
            fidelity=args.fidelity,
            agreement_text=args.agreement_text,
            agreement_gate=AgreementGate(
                min_agreement=args.min_unlabelled_agreement,
                max_p99_score_diff=args.max_unlabelled_p99,
            ),
            gate=gate.Gate(
                max_accuracy_drop=args.max_accuracy_drop,
                min_agreement=args.min_agreement,
                max_regression_error=args.max_regression_error,
            ),
        )
    )
    _print(summary(manifest, args.out))
    return 0


def _classifier(args: argparse.Namespace) -> Any:
    from handler.inference import Classifier

    return Classifier.from_dir(_model_dir(args), threads=args.threads)


def cmd_classify(args: argparse.Namespace) -> int:
    from handler.errors import InvalidInput
    from handler.inference import LEGACY

    if not args.texts and sys.stdin.isatty():  # nothing given and nothing piped: say so
        sys.stderr.write(args.usage())
        raise InvalidInput("no TEXT given: pass TEXT... or pipe texts on stdin, one per line")
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    top_k: Any = LEGACY
    if args.top_k is not None:
        top_k = None if args.top_k == "all" else int(args.top_k)
    items: list[Any] = list(texts)
    if args.pairs:  # each TEXT (or line) is text<TAB>text_pair
        items = []
        for i, text in enumerate(texts):
            first, tab, second = text.partition("\t")
            if not tab:
                raise InvalidInput(f"--pairs: input {i} has no tab between text and text_pair")
            items.append({"text": first, "text_pair": second})
    if args.text_pair is not None:
        if len(texts) != 1 or args.pairs:
            raise InvalidInput("--text-pair goes with exactly one TEXT (use --pairs for several)")
        items = [{"text": texts[0], "text_pair": args.text_pair}]
    inputs = items[0] if len(items) == 1 else items
    clf = _classifier(args)
    _print(
        clf.predict(inputs, top_k=top_k, function_to_apply=args.function, long_text=args.long_text)
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from handler.datafiles import read_labelled
    from handler.evaluate import evaluate, task_for

    clf = _classifier(args)
    _print(evaluate(clf, read_labelled(args.data, clf.id2label, task_for(clf))))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from handler.manifest import check_files

    manifest = check_files(_model_dir(args))
    _print({"ok": True, "files": sorted(manifest["files"])})
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from handler.errors import InvalidInput
    from handler.local.invoke import invoke_file

    try:
        _print(invoke_file(args.event, current_etag=args.current_etag))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"--event {args.event} is not a JSON event ({exc}); tests/events/ has examples"
        ) from None
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from handler import tune
    from handler.datafiles import read_texts
    from handler.errors import InvalidInput
    from handler.tune.sample import REVIEWS

    prices = tune.PRICES[args.arch]
    if args.price_gb_s is not None:
        prices = replace(prices, per_gb_second=args.price_gb_s, as_of="given")
    if args.price_request is not None:
        prices = replace(prices, per_million_requests=args.price_request, as_of="given")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise InvalidInput(f"--sizes takes sizes in MB, e.g. 1024,1769: {args.sizes!r}") from None
    if not sizes or any(not 128 <= s <= 10240 for s in sizes):
        raise InvalidInput(f"--sizes must be Lambda memory sizes, 128-10240 MB: {args.sizes!r}")
    if args.rounds < 1:
        raise InvalidInput(f"--rounds must be 1 or more, got {args.rounds}")
    if not 0 < args.request_seconds <= 900:
        raise InvalidInput(f"--request-seconds must be in (0, 900], got {args.request_seconds}")
    texts: list[Any] = read_texts(args.data) if args.data else list(REVIEWS)
    model = Path(args.model) if args.measured else _model_dir(args)
    result = tune.run(
        model,
        texts,
        sizes,
        prices,
        args.p99_ms,
        measured_file=args.measured,
        progress=lambda msg: print(f"tune: {msg}", file=sys.stderr, flush=True),
        rounds=args.rounds,
        request_seconds=args.request_seconds,
        long_text=args.long_text,
    )
    from handler.tune import samconfig

    values = samconfig.overrides(result)
    if args.samconfig:
        samconfig.write(args.samconfig, values, args.config_env)
    if args.json:
        _print({**result, "parameter_overrides": values})
    else:
        _result_stream.write(tune.render(result) + "\n")
        _result_stream.write(
            f"sam deploy --parameter-overrides {samconfig.as_argument(values)}"
            + (f"   (written to {args.samconfig} [{args.config_env}])" if args.samconfig else "")
            + "\n"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.through_lambda:
        import uvicorn

        from handler.config import get_settings
        from handler.entry import lambda_handler
        from handler.local.framing import reject_ambiguous_framing
        from handler.local.gateway import lambda_gateway

        app = reject_ambiguous_framing(
            lambda_gateway(lambda_handler, get_settings().max_body_bytes)
        )
        print(
            f"serving lambda_handler (HTTP API events) on http://{args.host}:{args.port}",
            file=sys.stderr,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", lifespan="off")
        return 0
    import uvicorn

    from handler.function import create_local_app
    from handler.local.framing import reject_ambiguous_framing

    app = reject_ambiguous_framing(create_local_app())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def parser() -> argparse.ArgumentParser:
    from handler.compiler.fetch import DEFAULT_MODEL
    from handler.compiler.targets import DEFAULT_FIDELITY, DEFAULT_TARGET, FIDELITY, TARGETS

    p = Parser(prog="python -m handler", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    shown = Shown
    threads_help = "onnxruntime intra-op threads"
    model_help = "built model folder (default: MODEL_DIR, else ./build/model)"

    b = sub.add_parser(
        "build", help="hub id or local folder -> verified int8 ONNX artifact", formatter_class=shown
    )
    b.add_argument("--model", default=DEFAULT_MODEL, help="hub model id or local folder")
    b.add_argument("--revision", help="hub branch, tag or commit to pin")
    b.add_argument(
        "--target",
        type=target_name,
        default=DEFAULT_TARGET,
        help="the CPU family the artifact is for: "
        + "; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()),
    )
    b.add_argument("--out", default="build/model", help="output folder (replaced on success)")
    b.add_argument(
        "--eval",
        type=existing_file,
        help="labelled TSV for the gate (default: SST-2 validation, from the hub)",
    )
    b.add_argument("--threads", type=positive_int, default=1, help=threads_help)
    b.add_argument("--max-accuracy-drop", type=float, default=0.5, help="points")
    b.add_argument(
        "--min-agreement",
        type=float,
        default=0.985,
        help="share of texts whose label is fp32's (multi-label: of label decisions at 0.5)",
    )
    b.add_argument(
        "--max-regression-error",
        type=float,
        help="regression heads: largest mean |int8 - fp32| output (default: 2%% of fp32's spread)",
    )
    b.add_argument(
        "--agreement-text",
        type=existing_file,
        help="unlabelled text, one per line, for agreement with fp32 off the labelled set's "
        "domain (default: Python standard library docstrings, made at build time)",
    )
    b.add_argument(
        "--min-unlabelled-agreement",
        type=float,
        help="fail the build when label agreement with fp32 on that text is below this",
    )
    b.add_argument(
        "--max-unlabelled-p99",
        type=float,
        help="fail the build when the 99th percentile score difference there is above this",
    )
    b.add_argument(
        "--verify-on",
        choices=["auto", "target", "host"],
        default="auto",
        help="where an arm64 artifact built on x86 is scored: auto (under qemu-aarch64 when "
        "scripts/arm64_root.sh has made an arm64 Python, else this host, and the manifest says "
        "so), target (emulated or fail), host",
    )
    b.add_argument(
        "--fidelity",
        choices=list(FIDELITY),
        default=DEFAULT_FIDELITY,
        help="how closely int8 follows fp32, against speed: balanced, calibrated int8 at the "
        "previous recipe's speed; high, also LayerNorm outputs' outlier channels in fp32, ~15%% "
        "fewer label flips on out-of-domain text for 15-19%% of throughput (docs/building.md, "
        "Fidelity levels)",
    )
    b.set_defaults(func=cmd_build)

    for name, func, helptext in (
        ("classify", cmd_classify, "print pipeline-shaped predictions for TEXT... (or stdin)"),
        ("eval", cmd_eval, "accuracy of a built model on a labelled TSV"),
        ("verify", cmd_verify, "check a built model's files against its manifest"),
    ):
        c = sub.add_parser(name, help=helptext, formatter_class=shown)
        c.add_argument("--model", help=model_help)
        c.add_argument("--threads", type=positive_int, default=1, help=threads_help)
        c.set_defaults(func=func, usage=c.format_usage)
        if name == "classify":
            c.add_argument("texts", nargs="*", metavar="TEXT", help="texts (none: stdin lines)")
            c.add_argument("--top-k", help="an integer, or 'all' (default: the top label only)")
            c.add_argument(
                "--function", help="softmax | sigmoid | none (default: the model's task's)"
            )
            c.add_argument("--text-pair", help="the pair of the one TEXT (NLI, paraphrase)")
            c.add_argument(
                "--pairs",
                action="store_true",
                help="each TEXT (or stdin line) is text<TAB>text_pair",
            )
            c.add_argument(
                "--long-text",
                choices=["truncate", "windows"],
                default="truncate",
                help="a text longer than the model reads: truncated (the pipeline's answer) or "
                "read whole in windows whose scores are averaged",
            )
        if name == "eval":
            c.add_argument("--data", type=existing_file, required=True, help="text<TAB>label file")

    i = sub.add_parser(
        "invoke",
        help="run lambda_handler on an event file (like sam local invoke)",
        formatter_class=shown,
        epilog="The model comes from MODEL_DIR (default ./build/model), as in Lambda.",
    )
    i.add_argument(
        "--event",
        type=existing_file,
        required=True,
        help="an event as JSON (API Gateway, ALB, Function URL, S3, SQS, SNS, EventBridge: "
        "tests/events/ has one of each)",
    )
    i.add_argument(
        "--current-etag",
        action="store_true",
        help="give each S3 object in the event its current eTag and size (HEAD; AWS_ENDPOINT_URL "
        "for a local S3), as for an event from `sam local generate-event s3 put`",
    )
    i.set_defaults(func=cmd_invoke)

    t = sub.add_parser(
        "tune",
        help="latency, throughput and cost per million texts at each memory size",
        formatter_class=shown,
    )
    t.add_argument("--model", help=model_help)
    t.add_argument(
        "--data",
        type=existing_file,
        help="texts, one per line (default: a built-in sample of reviews)",
    )
    t.add_argument(
        "--arch",
        choices=["x86_64", "arm64"],
        default="x86_64",
        help="the Lambda architecture whose prices are used",
    )
    t.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_TUNE_SIZES)), help="memory sizes, MB, commas"
    )
    t.add_argument("--p99-ms", type=float, default=100.0, help="the API's one-text p99 target (ms)")
    t.add_argument("--price-gb-s", type=float, help="USD per GB-second (default: published)")
    t.add_argument(
        "--price-request", type=float, help="USD per million requests (default: published)"
    )
    t.add_argument(
        "--measured",
        type=existing_file,
        help="figures from an earlier `tune --json` (e.g. run on arm64): costs only, no timing",
    )
    t.add_argument("--rounds", type=int, default=3, help="each size once per round; medians")
    t.add_argument(
        "--request-seconds",
        type=float,
        default=10.0,
        help="the time a request's whole token budget may take: sets the MAX_REQUEST_TOKENS "
        "recommended per size",
    )
    t.add_argument(
        "--long-text",
        choices=["truncate", "windows"],
        default="truncate",
        help="price texts longer than the model read in windows (give long texts with --data)",
    )
    t.add_argument("--json", action="store_true", help="print the figures as JSON")
    t.add_argument(
        "--samconfig",
        type=Path,
        help="write the recommendation (ApiMemorySize, BatchMemorySize, MaxRequestTokens, "
        "Architecture) into this samconfig.toml's parameter overrides, keeping its other entries",
    )
    t.add_argument(
        "--config-env",
        default="default",
        help="the samconfig.toml environment to write (sam deploy --config-env)",
    )
    t.set_defaults(func=cmd_tune)

    s = sub.add_parser(
        "serve",
        help="the API on http://127.0.0.1:8000 (uvicorn)",
        formatter_class=shown,
        epilog="The model comes from MODEL_DIR (default ./build/model), as in Lambda.",
    )
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    s.add_argument("--port", type=int, default=8000, help="the port to listen on")
    s.add_argument(
        "--through-lambda",
        action="store_true",
        help="serve through lambda_handler, each request as an API Gateway HTTP API event "
        "(like `sam local start-api`, without Docker)",
    )
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    global _result_stream
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parser().parse_args(argv)
    _result_stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            code: int = args.func(args)
    except ClassifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:  # a file given is not text (e.g. --data model.onnx)
        print(f"error: a file given is not UTF-8 text: {exc}", file=sys.stderr)
        return 2
    return code
