"""CPU and memory amounts in Kubernetes notation, for the docker and pod runners.

An action's ``resources: {cpu: "500m", memory: "256Mi"}`` is written once, the way
Kubernetes (and Strøm) write it; the pod runner passes the strings on unchanged and
the docker runner converts them with these functions. Kubernetes notation is used for
both because Docker's own (``512m`` = 512 MiB) collides with it (``512m`` memory is
half a byte in Kubernetes): a memory amount with a milli suffix is refused with a hint
instead of being guessed. The module lives with the workspace because `validate` checks the
amounts without a runner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

__all__ = ["RESOURCE_KEYS", "cpu_nanos", "memory_bytes", "resource_problems"]

RESOURCE_KEYS = ("cpu", "memory")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPEm]))?$")


def _number(text: str, what: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{what} {text!r} is not a quantity (examples: {_EXAMPLES[what]})")
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number + (exponent or ""))
    except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
        raise ValueError(f"{what} {text!r} is not a number") from None
    return value, suffix or ""


_EXAMPLES = {"cpu": '"500m", "0.5", "2"', "memory": '"256Mi", "1Gi", "500M"'}


def cpu_nanos(text: str) -> int:
    """``"500m"`` → 500_000_000 (Docker's ``NanoCpus``); ``"2"`` → 2_000_000_000."""
    value, suffix = _number(text, "cpu")
    if suffix == "m":
        value /= 1000
    elif suffix:
        raise ValueError(f'cpu {text!r}: write cores ("2", "0.5") or millicores ("500m")')
    nanos = int(value * 1_000_000_000)
    if nanos <= 0:
        raise ValueError(f"cpu {text!r} must be more than zero")
    return nanos


def memory_bytes(text: str) -> int:
    """``"256Mi"`` → 268_435_456; ``"1G"`` → 10**9; ``"1e6"`` and ``"1048576"`` are bytes."""
    value, suffix = _number(text, "memory")
    if suffix == "m":
        raise ValueError(
            f"memory {text!r}: 'm' means milli in Kubernetes notation; write {text[:-1]}Mi"
            f" for {text[:-1]} mebibytes"
        )
    factor = _BINARY.get(suffix) or _DECIMAL.get(suffix) or 1
    amount = int(value * factor)
    if amount <= 0:
        raise ValueError(f"memory {text!r} must be more than zero")
    return amount


def resource_problems(resources: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(key, problem)`` for every unknown key or bad amount of an action's ``resources``."""
    problems: list[tuple[str, str]] = []
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            problems.append(
                (
                    key,
                    f"unknown resource {key!r}: `resources` takes `cpu` and `memory`; anything"
                    " else (GPUs, requests other than limits) goes in a pod `manifest`",
                )
            )
            continue
        parse = cpu_nanos if key == "cpu" else memory_bytes
        try:
            parse(str(value))
        except ValueError as exc:
            problems.append((key, str(exc)))
    return problems
