"""CPU and memory amounts in Kubernetes notation, converted for Docker."""

from __future__ import annotations

import pytest

from headwater.workspace.quantities import cpu_nanos, memory_bytes, resource_problems


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("500m", 500_000_000), ("2", 2_000_000_000), ("0.25", 250_000_000), ("1.5", 1_500_000_000)],
)
def test_cpu(text: str, nanos: int) -> None:
    assert cpu_nanos(text) == nanos


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("500M", 500_000_000),
        ("1k", 1000),
        ("1048576", 2**20),
        ("1e6", 10**6),
        ("1.5Gi", 3 * 2**29),
    ],
)
def test_memory(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize(
    ("call", "text", "message"),
    [
        (memory_bytes, "512m", "'m' means milli in Kubernetes notation; write 512Mi"),
        (memory_bytes, "lots", "is not a quantity (examples:"),
        (memory_bytes, "0", "must be more than zero"),
        (cpu_nanos, "2Gi", 'write cores ("2", "0.5") or millicores ("500m")'),
        (cpu_nanos, "0m", "must be more than zero"),
    ],
)
def test_bad_amounts_say_what_to_write(call: object, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(text)  # type: ignore[operator]


def test_resource_problems_name_the_key() -> None:
    assert resource_problems({"cpu": "1", "memory": "1Gi"}) == []
    problems = resource_problems({"gpu": "1", "memory": "1 GB"})
    assert [key for key, _ in problems] == ["gpu", "memory"]
    assert "goes in a pod `manifest`" in problems[0][1]
