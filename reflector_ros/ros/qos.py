"""The node's QoS profiles, and the DDS events it listens to: images lost on the way and
peers whose QoS cannot match.

Event callbacks are imported from ``rclpy.event_handler`` (Iron and later) or
``rclpy.qos_event`` (Humble). An RMW that lacks an event type raises
``UnsupportedEventTypeError`` when asked for it; the entity is then created with fewer
events rather than not at all.
"""
from __future__ import annotations

from typing import Any, Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind

try:                      # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:       # Humble
    from rclpy.qos_event import (PublisherEventCallbacks, SubscriptionEventCallbacks,  # type: ignore[no-redef]
                                 UnsupportedEventTypeError)


def profile(kind: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile; ``kind`` "reliable" or anything else for best effort
    ("sensor_data" is best effort, as rclpy's qos_profile_sensor_data)."""
    rel = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def subscription(node: Node, msg_type: Any, topic: str, callback: Callable, qos: QoSProfile,
                 on_incompatible: Callable[[Any], None], on_lost: Callable[[Any], None] | None = None) -> Any:
    """``node.create_subscription`` with the incompatible-QoS event and, given ``on_lost``,
    the message-lost event (images DDS dropped before they reached the node)."""
    for events in (dict(incompatible_qos=on_incompatible, message_lost=on_lost),
                   dict(incompatible_qos=on_incompatible), {}):
        try:
            return node.create_subscription(msg_type, topic, callback, qos,
                                            event_callbacks=SubscriptionEventCallbacks(**events))
        except UnsupportedEventTypeError:
            continue
    raise AssertionError("unreachable: a subscription with no events cannot be unsupported")


def publisher(node: Node, msg_type: Any, topic: str, qos: QoSProfile, on_incompatible: Callable[[Any], None]) -> Any:
    """``node.create_publisher`` with the incompatible-QoS event where the RMW has it."""
    try:
        return node.create_publisher(msg_type, topic, qos,
                                     event_callbacks=PublisherEventCallbacks(incompatible_qos=on_incompatible))
    except UnsupportedEventTypeError:
        return node.create_publisher(msg_type, topic, qos)


def incompatible_text(side: str, topic: str, policy_kind: Any, input_qos: str, output_qos: str) -> str:
    """What an incompatible-QoS event means for the user, and the fix. ``side`` "input" (a
    publisher the node cannot receive from) or "output" (a subscriber it cannot serve);
    ``policy_kind`` is the event's ``last_policy_kind``. Only reliability is the node's to
    change; any other policy is the peer's."""
    policy = qos_policy_name_from_kind(policy_kind)
    reliability = "RELIABILITY" in str(policy).upper()
    if side == "input":
        text = f"a publisher on {topic} offers QoS this node cannot receive ({policy}), so its messages never arrive: "
        return text + (f"input_qos is {input_qos}; set it to match the camera (sensor_data / best_effort takes "
                       "either)" if reliability else "the publisher must change (the node asks only for reliability)")
    text = f"a subscriber of {topic} asks for QoS this node does not offer ({policy}), so it receives nothing: "
    return text + (f"output_qos is {output_qos}; set it to reliable (which serves best-effort subscribers too)"
                   if reliability else "the subscriber must change (the node offers volatile, keep-last messages "
                   "with no deadline)")
