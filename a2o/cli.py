"""The ``a2o`` command line. The only place in ``a2o/`` that parses argv.

Each sub-command lives in ``a2o/commands/<name>.py`` as ``run(args) -> int`` and is imported only
when used, so ``a2o --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from a2o.errors import A2OError, SearchInterrupted

log = logging.getLogger("a2o")


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="experiment YAML (see cluster/configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=1e-4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a2o",
        description="A2O: LLM-guided object-class search for video action recognition, on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show everything on the terminal (Ray, libraries, workers) at debug level, instead of a run log file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # a2o config ...
    p_cfg = sub.add_parser("config", help="show a resolved config or the documentation of every key")
    cfg_sub = p_cfg.add_subparsers(dest="action", metavar="ACTION")
    p = cfg_sub.add_parser("show", help="print the resolved config as YAML")
    _add_config_args(p, required=False)
    p.set_defaults(handler="config:show")
    p = cfg_sub.add_parser("docs", help="list every config key with its default and meaning")
    p.set_defaults(handler="config:docs")

    # a2o data ...
    p_data = sub.add_parser("data", help="manifests, frame store, A2O-Synth")
    data_sub = p_data.add_subparsers(dest="action", metavar="ACTION")
    p = data_sub.add_parser("prepare", help="read the manifest, split, and decode every video once")
    _add_config_args(p)
    p.set_defaults(handler="data:prepare")
    p = data_sub.add_parser("synth", help="generate an A2O-Synth world from a spec (docs/WORLDS.md)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--spec", help="world spec YAML (see docs/WORLDS.md)")
    which.add_argument("--preset", help="a shipped world: household (default) or tiny")
    p.add_argument("--out", required=True, help="output directory (local path or fsspec URI)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the spec's)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="replace another world in --out")
    p.set_defaults(handler="data:synth")

    p = sub.add_parser("detect", help="fill the likelihood-map cache for a class set")
    _add_config_args(p)
    p.add_argument("--classes", required=True, help='comma-separated, e.g. "person,ball"')
    p.set_defaults(handler="detect:run")

    p = sub.add_parser("train", help="run one trial (one class set) outside Tune")
    _add_config_args(p)
    p.add_argument("--classes", default="", help='comma-separated; empty = RGB-only baseline')
    p.set_defaults(handler="train:run")

    p = sub.add_parser("search", help="run a search: config to best model")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.set_defaults(handler="search:run")

    p = sub.add_parser("serve", help="serve a best/ model with Ray Serve")
    p.add_argument("--model", required=True, help="path of a best/ directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a serve.* key of the model's config, e.g. --set serve.max_upload_mb=16",
    )
    p.add_argument(
        "--allow-oracle-detector",
        action="store_true",
        help="serve a model whose detector reads annotations (detect.detector: annotation) anyway: "
        "uploads carry none, so its object maps are empty; every response then carries a warning",
    )
    p.set_defaults(handler="serve:run")

    p_llm = sub.add_parser("llm", help="the embedded local LLM")
    llm_sub = p_llm.add_subparsers(dest="action", metavar="ACTION")
    p = llm_sub.add_parser("serve", help="start the local OpenAI-compatible server (foreground)")
    p.add_argument("--model", default=None)
    p.add_argument("--port", type=int, default=0, help="0 = a free loopback port")
    p.set_defaults(handler="llm:serve")

    p = sub.add_parser("report", help="write an HTML report of a run")
    p.add_argument("run_dir")
    p.set_defaults(handler="report:run")
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after any subcommand too (``a2o search --config X -v``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                   help="show everything on the terminal instead of a run log file")
                _verbose_everywhere(child)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from a2o.commands.console import ReportedError, setup_logging

    setup_logging(args.verbose)
    handler = getattr(args, "handler", None)
    if handler is None:
        # `a2o` or `a2o data` alone: show the relevant help.
        target = {"data": "data", "config": "config", "llm": "llm"}.get(args.command or "")
        if target:
            parser.parse_args([target, "--help"])
        parser.print_help()
        return 2
    # SIGTERM (a job being cancelled, `kill`) unwinds like Ctrl-C, so `finally` blocks stop the
    # embedded LLM server and shut down a Ray cluster this command started.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    module_name, func_name = handler.split(":")
    try:
        module = importlib.import_module(f"a2o.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"a2o.commands.{module_name}":
            print(f"a2o {args.command}: not yet available in this version", file=sys.stderr)
            return 2
        raise
    try:
        return int(getattr(module, func_name)(args) or 0)
    except SearchInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except A2OError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ReportedError:
        return 1  # already on the terminal, with the log file that holds the traceback


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
