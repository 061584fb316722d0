"""Entry point of the depth node: `reflector node`, `ros2 run reflector_ros depth_node`,
`ros2 launch reflector_ros depth.launch.py`. Context, Fast DDS profile, signals, spin.

SIGINT and SIGTERM end the node cleanly (exit 0, no traceback): rclpy installs its
handlers only for the default context, and the node has its own. They are installed by the
first statements of this module, before anything else of it loads; rclpy, numpy and the
backend load inside main(), under them. What is left to Python's defaults is the
interpreter's own start and the two empty package ``__init__`` files before this module
(on an idle machine about 20 ms from exec; a ``/bin/sh`` wrapper such as ros2 run's
script holds the shell's defaults until its ``exec``).
"""
from __future__ import annotations

import signal
import sys


class _StopSignals:
    """SIGINT and SIGTERM both end the node cleanly: exit 0, no traceback, within a poll.

    rclpy installs its signal handlers only for the default context; the node has its
    own, so SIGTERM (what `ros2 launch` sends 5 s after SIGINT) used to kill it outright.
    While main() imports rclpy and the node, a signal only sets ``received`` (a
    KeyboardInterrupt inside an extension module's import can surface as an ImportError);
    main() looks once the imports are done. Then, until the node spins, a signal
    interrupts start-up (KeyboardInterrupt). While it spins, a signal only sets
    ``received``: the spin loop wakes every POLL_S to look, and the clean-up then lets a
    frame in flight finish and publish on a live context. A second signal during the
    clean-up is ignored rather than breaking it (`ros2 launch` escalates), and main()
    leaves SIGINT and SIGTERM ignored for the interpreter's exit.
    """
    POLL_S = 0.1

    def __init__(self) -> None:
        self.received: str | None = None
        self.interrupt = False
        self.installed = False
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
            self.installed = True
        except ValueError:   # not the main thread (an embedding application): its handlers stay
            pass

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        if self.interrupt:
            raise KeyboardInterrupt


_STOP = _StopSignals()   # first: a signal while the rest of this module and main()'s imports load is noted

import argparse  # noqa: E402  (after the handlers, on purpose)
import gc  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("ROS arguments pass through: reflector node --ros-args -p backend:=onnxruntime "
                     "-p model:=my.onnx -r image:=/camera/color/image_raw --params-file config/depth.yaml")


def run(args: argparse.Namespace) -> int:
    return main(getattr(args, "ros_argv", None))


def _fastdds_profile() -> tuple[str | None, bool]:
    """Apply our Fast DDS profile unless the user chose otherwise; (the line that says which
    profile is in effect and who set it, whether it is a warning)."""
    try:
        from reflector_ros.ros.fastdds import apply_default_profile, describe_profile
    except ImportError:
        return None, False
    try:
        applied = apply_default_profile()
        return describe_profile(set_by="the node" if applied else None)
    except Exception as exc:  # noqa: BLE001  (a speed-up only; never stop the node for it)
        return f"Fast DDS profile not applied: {exc}", True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    stop = _STOP
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from reflector_ros.ros.node import NODE_NAME, DepthNode, StartupError

    context: rclpy.context.Context | None = None
    node = None
    try:
        stop.interrupt = True
        if stop.received:   # a signal during the imports
            raise KeyboardInterrupt
        profile_line, profile_warn = _fastdds_profile()
        context = rclpy.context.Context()
        rclpy.init(args=argv, context=context)
        try:
            node = DepthNode(context=context)
        except StartupError as exc:
            if stop.received:   # the signal's KeyboardInterrupt, wrapped by a runtime on its way out
                rclpy.logging.get_logger(NODE_NAME).info(f"{stop.received} during start-up: not starting")
                return 0
            rclpy.logging.get_logger(NODE_NAME).error(f"refusing to start: {exc}")
            return 1
        if profile_line:
            (node.get_logger().warning if profile_warn else node.get_logger().info)(profile_line)
        # Everything loaded so far (rclpy, numpy, the runtime) lives for the whole run:
        # keep it out of the collector so a full collection cannot stall a frame (~6 ms).
        gc.collect()
        gc.freeze()
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        stop.interrupt = False
        try:
            while stop.received is None and context.ok():
                executor.spin_once(timeout_sec=stop.POLL_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        if stop.received:
            node.get_logger().info(f"{stop.received}: shutting down")
    except KeyboardInterrupt:
        if node is None:
            rclpy.logging.get_logger(NODE_NAME).info(f"{stop.received} during start-up: not starting")
    finally:
        stop.interrupt = False
        stop.received = stop.received or "exit"   # from here on, signals are ignored
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if context is not None:
            context.try_shutdown()
        # The interpreter's exit puts Python-level handlers back to the default (a second
        # Ctrl-C, or ros2 launch's SIGTERM, would then kill the process on its way out);
        # an ignored signal stays ignored through it.
        if stop.installed:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
