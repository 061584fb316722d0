"""`reflector <command>`: one entry point for the node and the ML toolkit.

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules import lazily so `reflector node` never loads torch.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import warnings

COMMANDS: dict[str, tuple[str, str]] = {
    "node": ("reflector_ros.ros.main", "run the ROS 2 depth node (same as depth_node)"),
    "demo": ("reflector_ros.commands.demo", "publish a camera feed to the node, write a preview PNG, print timings"),
    "train": ("reflector_ros.train.train", "train or fine-tune a Reflector model"),
    "eval": ("reflector_ros.commands.eval", "evaluate a model on depth datasets"),
    "infer": ("reflector_ros.commands.infer", "offline inference on images, folders, videos or bags"),
    "export": ("reflector_ros.model.export", "export a checkpoint to ONNX (pair and fused)"),
    "build-engine": ("reflector_ros.backends.engine_build", "build TensorRT engines from ONNX"),
    "bench": ("reflector_ros.commands.bench", "per-stage latency of every available backend"),
    "synth": ("reflector_ros.data.synthetic", "render a synthetic metric-depth dataset"),
}


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as one line for the user ("warning: ..."), not Python's file:line and source."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.formatwarning = _warning_line
    if argv[:1] == ["node"]:
        # first, before any parser is built: `ros2 launch` may stop the node while Python is
        # still importing it; end cleanly then too (the node's own handlers take over in main())
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return _command(argv)
        except KeyboardInterrupt:
            return 0
    parser = argparse.ArgumentParser(prog="reflector", description=__doc__.splitlines()[0],
                                     epilog="reflector COMMAND --help for each command's options; reflector --version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, helptext) in COMMANDS.items():
        sub.add_parser(name, help=helptext, add_help=False)
    if argv and argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"reflector_ros {version('reflector_ros')}")
        except PackageNotFoundError:   # run from a source tree that was never installed
            print("reflector_ros (not installed: version unknown)")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"reflector: unknown command {argv[0]!r}; the commands are: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    return _command(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _command(argv: list[str]) -> int:
    module = importlib.import_module(COMMANDS[argv[0]][0])
    cmd = argparse.ArgumentParser(prog=f"reflector {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(cmd)
    if argv[0] == "node":  # ROS arguments (--ros-args ...) pass through untouched
        args, _ = cmd.parse_known_args(argv[1:])
        args.ros_argv = argv
    else:  # options and positionals in any order: `train --steps 5 train.lr=1e-4` works too
        args = cmd.parse_intermixed_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
