"""Command-line options every iworkflow script wants: where jobs run, which bus, how many slots, where output goes."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .runtime import Runtime, configure


def add_runtime_arguments(parser: argparse.ArgumentParser, out_dir: Path | None = None,
                          slots_help: str = "local processes/threads (default: one per core)") -> None:
    """Add ``--executor``, ``--broker``, ``--slots`` (and ``--out`` when a default folder is given)."""
    parser.add_argument("--executor", default="local", help="local, thread, broker, dask, ray or slurm")
    parser.add_argument("--broker", default=None, help="bus URL, e.g. amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--slots", type=int, default=None, help=slots_help)
    if out_dir is not None:
        parser.add_argument("--out", type=Path, default=out_dir,
                            help=f"directory for the results (default: {out_dir})")


def configure_from_args(args: argparse.Namespace, progress_logger: logging.Logger | None = None) -> Runtime:
    """Configure iworkflow from those options; the script's own logger reports progress at INFO."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if progress_logger is not None:
        progress_logger.setLevel(logging.INFO)
    return configure(executor=args.executor, broker=args.broker, slots=args.slots)
