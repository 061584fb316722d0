"""Command-line tools that are not part of one subsystem: `reflector infer`, `bench`, `demo`.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` for reflector_ros.cli.
"""
