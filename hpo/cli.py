"""The ``hpo`` command: parse, call, print, exit. Exit codes: 0 done, 1 run-time failure, 2 input."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from hpo.errors import ConfigError, HpoError, InputError, ModelError, Problem, SpecError
from hpo.execution.interrupt import Interrupted

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a "
                        "local Ray started in-process)")
    common.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's "
                        "tracking.uri, MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    common.add_argument("--seed", type=int, help="override the study file's seed")
    common.add_argument("--quiet", action="store_true", help="print only the final result")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = argparse.ArgumentParser(
        prog="hpo", description="Coarse-to-fine hyperparameter search for PyTorch on Ray Tune, "
        "Optuna and MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = sub.add_parser("search", parents=[common], help="run a whole study")
    search.add_argument("space", metavar="SPACE.yaml")
    search.add_argument("--study-root", default="hpo_runs",
                        help="where study folders live (default: ./hpo_runs)")
    search.add_argument("--force", action="store_true",
                        help="skip the sanity checks (run the study even if they would fail)")
    search.add_argument("--resume", action="store_true",
                        help="continue the interrupted study of this file from its study folder")
    check = sub.add_parser("check", parents=[common],
                           help="only the sanity checks (babysitting), as a pass/fail table")
    check.add_argument("space", metavar="SPACE.yaml")
    validate = sub.add_parser("validate", parents=[common],
                              help="check a study file and print it resolved; runs nothing")
    validate.add_argument("space", metavar="SPACE.yaml")
    train = sub.add_parser("train", parents=[common],
                           help="train one fixed configuration (e.g. best.yaml) and log it")
    train.add_argument("space", metavar="CONFIG.yaml")
    ui = sub.add_parser("ui", parents=[common], help="open the MLflow UI on the study's store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    return parser


def run() -> None:
    """The ``hpo`` command: ``main``, then exit at once with its code.

    By then everything the command writes is written (MLflow commits each call, the journal is
    synced, the study's Ray is stopped); tearing the interpreter down with torch, Ray and
    MLflow loaded took ~3 s after the last line. A Ray connection still open (a cluster's) is
    closed first, as Python's exit would.
    """
    code = main()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage; wrong options are input errors
        return 0 if exc.code == 0 else 2
    try:
        return _dispatch(args)
    except Interrupted as exc:  # Ctrl-C or SIGTERM: the study stopped, its runs KILLED
        again = (f"; resume with: {_resume_command(argv)}"
                 if getattr(exc, "resumable", False) else "")
        print(f"hpo: interrupted ({exc}){again}", file=sys.stderr)
        return exc.exit_code
    except (HpoError, ModelError) as exc:
        # The model factory's errors (a bad model config, checkpoint or input shape) are the
        # user's input, as in building or validating a study: exit 2.
        if args.debug:
            traceback.print_exc()
        print(f"hpo: error: {exc}" if not isinstance(exc, ConfigError) else str(exc),
              file=sys.stderr)
        return exc.exit_code if isinstance(exc, HpoError) else InputError.exit_code
    except KeyboardInterrupt:
        print("hpo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence keeps tracebacks opt-in
        if args.debug:
            traceback.print_exc()
        else:
            print(f"hpo: error: {type(exc).__name__}: {exc}\n(run again with --debug for the "
                  f"traceback)", file=sys.stderr)
        return 1


def _resume_command(argv: Sequence[str] | None) -> str:
    """The command line that goes on with the study: this one, with --resume."""
    import shlex

    given = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["hpo", *given, *([] if "--resume" in given else ["--resume"])])


def _load(args: argparse.Namespace):
    import dataclasses

    from hpo.config.spec import load_spec

    spec = load_spec(args.space)
    if args.seed is not None:
        if args.seed < 0:
            raise SpecError([Problem("--seed", "must be >= 0", args.seed, "a whole number >= 0")])
        spec = dataclasses.replace(spec, seed=args.seed)
    return spec


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        spec = _load(args)
        print(spec.to_yaml(), end="")
        dists = spec.distributions()
        print(f"# valid: {len(dists)} searched parameter(s)"
              + (f": {', '.join(dists)}" if dists else ""), file=sys.stderr)
        print(f"# strategy: {spec.strategy()}", file=sys.stderr)
        return 0
    if args.command == "search":
        from hpo.study.api import search

        search(_load(args), address=args.address, tracking_uri=args.tracking_uri,
               quiet=args.quiet, force=args.force, resume=args.resume,
               study_root=args.study_root)
        return 0
    if args.command == "check":
        from hpo.study.single import check_only

        return 0 if check_only(_load(args), tracking_uri=args.tracking_uri) else 1
    if args.command == "train":
        from hpo.study.api import train

        train(_load(args), tracking_uri=args.tracking_uri, quiet=args.quiet)
        return 0
    if args.command == "ui":
        from hpo.tracking.store import resolve_tracking_uri, serve_ui

        uri = resolve_tracking_uri(args.tracking_uri, None)
        if uri.startswith(("http://", "https://")):
            print(f"the tracking store {uri} is a server with its own UI: open {uri}")
            return 0
        return serve_ui(uri, host=args.host, port=args.port,
                        say=lambda line: print(line, file=sys.stderr, flush=True))
    raise InputError(f"unknown command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
