"""Command-line tools that are not part of one subsystem: `reflector infer`, `bench`, `demo`.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` for reflector_ros.cli.
"""
from __future__ import annotations

import argparse


class Once(argparse.Action):
    """Store an option that may be given once: a repeated ``--model`` would otherwise keep the
    last silently, and a user comparing two models would read one model's figures twice."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) not in (None, self.default):
            parser.error(f"{option_string} given twice; this command takes one (run it once per model"
                         f"{', or compare them in one run with reflector bench' if self.dest == 'model' else ''})")
        setattr(namespace, self.dest, values)
