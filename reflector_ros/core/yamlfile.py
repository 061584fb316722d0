"""Reading a YAML file the user wrote, with one set of messages for what can go wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reflector_ros.core.errors import InputError


def read_mapping(path: str | Path, what: str, expected: str) -> dict[str, Any]:
    """The file's top-level mapping (yaml.safe_load; an empty file is {}). InputError when it
    cannot be read, is not YAML, or is not a mapping; ``what`` names the file's role in the
    messages ("config", "camera info") and ``expected`` says what the mapping should hold."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected {expected}")
    return doc
