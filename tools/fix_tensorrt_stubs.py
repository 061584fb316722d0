#!/usr/bin/env python3
"""Make the tensorrt-stubs package usable by mypy, in place and idempotently.

tensorrt-stubs 10.13 ships without ``py.typed`` markers in ``tensorrt/`` and
``tensorrt_bindings/`` (so mypy ignores it) and with a few signatures that are
not valid Python (a parameter named ``in``; a required parameter after a
defaulted one), which stop mypy at parse time. We patch only those lines.
"""
from __future__ import annotations

import ast
import re
import site
import sys
import sysconfig
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
KEYWORD_PARAM = re.compile(r"(?<=[(,])(\s*)(in|is|as|if|for|from|def|class|lambda|not|and|or)(\s*:)")


def site_packages() -> list[Path]:
    """Candidate site-packages of the running interpreter (venv first)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    seen: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p not in seen and p.is_dir():
            seen.append(p)
    return seen


def _fix_keyword_params(line: str) -> str:
    """Rename a parameter spelt as a Python keyword (``in``) to ``in_``."""
    return KEYWORD_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}_{m.group(3)}", line)


def _fix_default_order(line: str) -> str:
    """Give ``= ...`` to required parameters that follow a defaulted one."""
    head, sep, rest = line.partition("(")
    if not sep or ")" not in rest:
        return line
    params, close, tail = rest.rpartition(")")
    parts = [p for p in _split_params(params)]
    seen_default = False
    out = []
    for p in parts:
        stripped = p.strip()
        if "=" in stripped:
            seen_default = True
        elif seen_default and stripped and not stripped.startswith("*") and stripped != "/":
            p = p.rstrip() + " = ..."
        if stripped.startswith("*"):
            seen_default = False if stripped == "*" else seen_default
        out.append(p)
    return f"{head}({','.join(out)}){tail}"


def _split_params(params: str) -> list[str]:
    """Split a parameter list on top-level commas (types may hold brackets)."""
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(params):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(params[start:i])
            start = i + 1
    parts.append(params[start:])
    return parts


def fix_stub(path: Path, max_rounds: int = 200) -> int:
    """Patch syntax errors in one .pyi until it parses; returns lines changed."""
    with open(path, encoding="utf-8", newline="") as f:  # keep CRLF as shipped
        lines = f.read().split("\n")
    changed = 0
    for _ in range(max_rounds):
        try:
            ast.parse("\n".join(lines), filename=str(path))
            break
        except SyntaxError as err:
            idx = (err.lineno or 1) - 1
            old = lines[idx]
            new = _fix_keyword_params(old)
            if new == old:
                new = _fix_default_order(old)
            if new == old:
                raise SystemExit(f"{path}:{idx + 1}: cannot fix syntax error {err.msg!r}: {old.strip()}")
            lines[idx] = new
            changed += 1
    else:
        raise SystemExit(f"{path}: still not parseable after {max_rounds} fixes")
    if changed:
        tmp = path.with_suffix(".pyi.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines))
        tmp.replace(path)
    return changed


def main() -> int:
    roots = [sp for sp in site_packages() if (sp / "tensorrt_bindings").is_dir()]
    if not roots:
        print("tensorrt-stubs not installed in this interpreter's site-packages; nothing to fix", file=sys.stderr)
        return 1
    root = roots[0]
    for pkg in PACKAGES:
        marker = root / pkg / "py.typed"
        if (root / pkg).is_dir() and not marker.exists():
            marker.write_text("", encoding="utf-8")
            print(f"created {marker}")
    total = 0
    for pkg in PACKAGES:
        for stub in sorted((root / pkg).glob("*.pyi")):
            n = fix_stub(stub)
            if n:
                print(f"fixed {n} line(s) in {stub}")
            total += n
    print(f"tensorrt stubs ready for mypy in {root} ({total} line(s) patched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
