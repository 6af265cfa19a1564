"""The UI's pure pieces: the DAG layout, the Run form's fields, run statistics and the
SSE frame format."""

from __future__ import annotations

from headwater.server.ui.dag import layout
from headwater.server.ui.pages_tasks import form_fields, run_stats
from headwater.server.ui.sse import event


def test_steps_are_placed_in_columns_by_dependency_depth() -> None:
    steps = [
        {"name": "a", "depends_on": []},
        {"name": "b", "depends_on": ["a"]},
        {"name": "c", "depends_on": ["a"]},
        {"name": "d", "depends_on": ["b", "c"]},
    ]
    dag = layout(steps, {"a": "completed", "b": "running"})
    x = {n["name"]: n["x"] for n in dag["nodes"]}
    assert x["a"] < x["b"] == x["c"] < x["d"]
    assert {n["name"]: n["status"] for n in dag["nodes"]} == {
        "a": "completed", "b": "running", "c": "pending", "d": "pending"
    }  # fmt: skip
    assert len(dag["edges"]) == 4
    assert dag["width"] > x["d"] and dag["height"] > max(n["y"] for n in dag["nodes"])


def test_a_cycle_or_unknown_dependency_does_not_break_the_layout() -> None:
    steps = [
        {"name": "a", "depends_on": ["b"]},
        {"name": "b", "depends_on": ["a", "ghost"]},
    ]
    dag = layout(steps)
    assert [n["name"] for n in dag["nodes"]] == ["a", "b"]


def test_the_run_form_follows_the_input_schema() -> None:
    fields = {
        f["name"]: f
        for f in form_fields(
            {
                "name": {"type": "string", "default": "world", "required": True},
                "count": {"type": "integer", "default": 3},
                "ratio": {"type": "number"},
                "loud": {"type": "boolean", "default": True},
                "mood": {"type": "string", "options": ["calm", "cheerful"]},
                "tags": {"type": "array", "default": ["a"]},
                "token": {"type": "string", "secret": True, "default": "••••••"},
                "when": {"type": "string", "default": "{{ now() }}"},
            }
        )
    }
    assert fields["name"]["widget"] == "text" and fields["name"]["required"]
    assert fields["name"]["value"] == "world"
    assert (fields["count"]["widget"], fields["count"]["step"]) == ("number", "1")
    assert fields["ratio"]["step"] == "any"
    assert fields["loud"]["widget"] == "checkbox" and fields["loud"]["value"] is True
    assert fields["mood"]["widget"] == "select" and fields["mood"]["options"] == [
        "calm",
        "cheerful",
    ]
    assert fields["tags"]["widget"] == "textarea" and '"a"' in fields["tags"]["value"]
    assert fields["token"]["widget"] == "password" and fields["token"]["value"] is None
    # A templated default is rendered by the server when the field is left empty.
    assert fields["when"]["value"] is None and fields["when"]["default_hint"] == "{{ now() }}"


def test_run_stats_count_finished_runs_only() -> None:
    def job(status: str, secs: int | None) -> dict[str, object]:
        end = None if secs is None else f"2026-01-01T00:00:{secs:02d}Z"
        return {"status": status, "started_at": "2026-01-01T00:00:00Z", "finished_at": end}

    stats = run_stats([job("completed", 2), job("failed", 4), job("completed", 6),
                       job("running", None)])  # fmt: skip
    assert stats["runs"] == 4 and stats["finished"] == 3
    assert round(stats["success_rate"]) == 67
    assert (stats["median"], stats["slowest"]) == (4.0, 6.0)
    assert run_stats([])["success_rate"] is None


def test_a_multi_line_event_keeps_its_lines() -> None:
    frame = event("rows", "<tr>\n</tr>", "7").decode()
    assert frame == "event: rows\nid: 7\ndata: <tr>\ndata: </tr>\n\n"
