"""``headwater consumers list`` on an app whose receivers take a class's defaults: every
receiver → function association with its effective configuration, secrets hidden (an
unknown class key failing with its file:line: tests/unit/test_sdk_class_defaults.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.e2e.procs import run_cli

APP = textwrap.dedent(
    """
    import headwater

    @headwater.receiver_defaults(
        "kafka", bootstrap_servers="alice:s3cret@kafka:9092", group_id="orders"
    )
    class Orders:
        @staticmethod
        @headwater.on_kafka("orders.created", name="order_created")
        def created(payload, metadata): ...

        @staticmethod
        @headwater.on_kafka("orders.paid", name="order_paid", group_id="billing")
        def paid(payload, metadata): ...
    """
)


def test_consumers_list_shows_each_receiver_with_its_effective_configuration(
    tmp_path: Path,
) -> None:
    app = tmp_path / "orders_app.py"
    app.write_text(APP)
    result = run_cli("consumers", "list", str(app), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["registrations"]}
    assert rows["order_created"]["function"] == "orders_app:Orders.created"
    assert rows["order_created"]["config"]["group_id"] == "orders"
    assert rows["order_paid"]["config"]["group_id"] == "billing"
    assert rows["order_paid"]["config"]["bootstrap_servers"] == "alice:•••@kafka:9092"
    assert rows["order_paid"]["class_defaults"] == ["bootstrap_servers"]
    table = run_cli("consumers", "list", str(app))
    assert table.returncode == 0, table.stderr
    assert "orders_app:Orders.paid" in table.stdout and "group_id=billing" in table.stdout
    assert "group_id=orders*" in table.stdout  # * marks a class default
    assert "s3cret" not in result.stdout + table.stdout
