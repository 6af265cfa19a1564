"""Shared fixtures: service gating and a store on SQLite and on PostgreSQL.

A test that needs a service skips with the reason when the service is down, and fails
instead when HEADWATER_REQUIRE_SERVICES=1 (CI sets it), so CI can never go green by
skipping the real thing. Under that variable every skip is a failure, except the ones
listed in ALLOWED_SKIPS below with their reason.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import AsyncIterator, Generator, Iterator
from types import ModuleType

import pytest

from tests.pg_databases import PgDatabases, create_database, drop_database
from tests.store_backends import STORE_BACKENDS

# Where the suite's time goes (tests/timeline.py): .ci/run sets HEADWATER_TIMELINE and
# prints bench/ci_timeline.py's report after the tests.
if os.environ.get("HEADWATER_TIMELINE"):
    pytest_plugins = ["tests.timeline"]

# The only tests that may skip when HEADWATER_REQUIRE_SERVICES=1: node id prefix -> why.
ALLOWED_SKIPS: dict[str, str] = {
    "tests/integration/test_runners_live.py": (
        "needs a live Docker engine or Kubernetes cluster; neither is one of CI's services"
        " (everything up to the API call is covered against recorded responses)"
    ),
    "tests/integration/test_sqlserver_cdc_live.py": (
        "needs a SQL Server (HEADWATER_SQLSERVER_URL); none is one of CI's services (the"
        " sqlserver_cdc queries and checkpoint are covered against recorded result sets)"
    ),
    "tests/integration/receivers/test_cloud_live.py": (
        "needs a live Google Cloud project, Event Hubs namespace or Pulsar cluster"
        " (HEADWATER_PUBSUB_PROJECT, HEADWATER_EVENTHUBS_CONNECTION, HEADWATER_PULSAR_URL);"
        " none is one of CI's services (the contract suite runs on the Pub/Sub emulator"
        " and on fakes of the others)"
    ),
    "tests/integration/test_local_runner.py::test_shell_is_bash_and_sh_is_sh": (
        "where /bin/sh is bash there is no plain sh to tell apart"
    ),
    "tests/unit/test_runner_venvs.py::test_key_depends_on_the_interpreter": (
        "needs a second path to the same interpreter, which some installs do not have"
    ),
}

PG_ADMIN_URL = os.environ.get("HEADWATER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# This test process's PostgreSQL databases, reused from test to test (tests/pg_databases.py).
PG_DATABASES = PgDatabases(PG_ADMIN_URL)

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "mqtt": ("127.0.0.1", 1883),
    "nats": ("127.0.0.1", 4222),
    "mariadb": ("127.0.0.1", 3306),
}


def services_required() -> bool:
    return os.environ.get("HEADWATER_REQUIRE_SERVICES") == "1"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip (locally) or fail (CI) when the named service does not answer."""
    host, port = SERVICES[name]
    if _port_open(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(reason + " and HEADWATER_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, extra: str) -> ModuleType:
    """Import an optional client library: skip (locally) or fail (CI) when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} is not installed (the {extra} extra: pip install -e '.[{extra}]')"
        if services_required():
            pytest.fail(f"{reason} and HEADWATER_REQUIRE_SERVICES=1: {exc}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
        raise  # unreachable: pytest.skip raises


def _allowed_skip(nodeid: str) -> bool:
    return any(nodeid == p or nodeid.startswith(p + "::") for p in ALLOWED_SKIPS)


def _refuse_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under HEADWATER_REQUIRE_SERVICES=1 a skip not in ALLOWED_SKIPS fails the test."""
    if not services_required() or not report.skipped or hasattr(report, "wasxfail"):
        return
    if _allowed_skip(report.nodeid.split("@", 1)[0].split("[", 1)[0]):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped with HEADWATER_REQUIRE_SERVICES=1 ({reason}); only the skips listed in"
        " tests/conftest.py ALLOWED_SKIPS may skip"
    )


# Tests that restart or cut a shared broker (NATS and Mosquitto restart; Redis, RabbitMQ
# kill their receivers' connections) must not run beside another test of the same broker
# in another xdist worker: each broker's tests form one group (``--dist loadgroup``), and
# different brokers still run in parallel.
_BROKERS = frozenset(
    {
        "redis_stream",
        "redis_list",
        "amqp",
        "mqtt",
        "nats",
        "kafka",
        "sqs",
        "postgres",
        "pubsub",
        "eventhubs",
        "pulsar",
    }
)


def _broker_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for key in ("harness", "kind"):
        value = callspec.params.get(key)
        if value in _BROKERS:
            return str(value)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        broker = _broker_of(item)
        if broker is not None:
            item.add_marker(pytest.mark.xdist_group(f"broker-{broker}"))
    # pytest-xdist 3.8 names a test's group in its node id (``…@group``) through
    # ``item._nodeid``, which pytest 9 no longer reads, so ``--dist loadgroup`` would
    # silently spread a group over all workers; the id is set here instead.
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if names and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(names))}")


# The serial chains of the run (xdist groups whose tests must not run beside each other)
# start first, longest first: the kill -9 tests take minutes one after another and the
# fresh-clone install a minute of waiting on pip, so started late (xdist's default order is
# by the number of tests in a group) they were the tail of the run. Everything else
# follows in xdist's order (big groups, then single tests).
# "crash": the kill -9 tests whose processes keep heartbeat or lease deadlines (two
# servers and workers, SDK consumers, Kafka's group): two side by side on 2 cores starve
# each other's heartbeats. "restart": the ones that only kill and restart one `headwater
# up` (workflows, cursors), which run beside them.
FIRST_GROUPS = ("crash", "restart", "readme_fresh_clone")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class LongChainsFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node: object) -> None:
            for group in reversed(FIRST_GROUPS):
                if group in self.workqueue:
                    self.workqueue.move_to_end(group, last=False)
            super()._assign_work_unit(node)  # type: ignore[arg-type]

    return LongChainsFirst(config, log)  # type: ignore[arg-type]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    _refuse_skip(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    outcome = yield
    _refuse_skip(outcome.get_result())  # type: ignore[attr-defined]


def _pg_url_for(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def create_pg_database(prefix: str = "hw_test") -> str:
    """A new empty PostgreSQL database; returns its URL."""
    return await create_database(PG_ADMIN_URL, prefix)


async def drop_pg_database(url: str) -> None:
    await drop_database(PG_ADMIN_URL, url)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    require_service("postgres")
    async with PG_DATABASES.lease() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> Iterator[str]:
    yield f"sqlite:///{os.fspath(tmp_path)}/headwater.db"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> AsyncIterator[str]:
    """Every store test runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.fspath(tmp_path)}/headwater.db"
        return
    require_service("postgres")
    async with PG_DATABASES.lease() as url:
        yield url


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_backend: str, tmp_path: os.PathLike[str]) -> AsyncIterator[object]:
    """A migrated store on SQLite, on PostgreSQL and in memory (headwater.testing)."""
    from headwater.store.base import Store

    st: Store
    if store_backend == "memory":
        from headwater.testing import InMemoryStore

        st = InMemoryStore()
        try:
            yield st
        finally:
            await st.close()
        return
    from headwater.store.sql import open_store

    if store_backend == "sqlite":
        st = await open_store(f"sqlite:///{os.fspath(tmp_path)}/headwater.db")
        try:
            yield st
        finally:
            await st.close()
        return
    require_service("postgres")
    async with PG_DATABASES.lease() as url:
        st = await open_store(url)
        try:
            yield st
        finally:
            await st.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL databases this test process used."""
    if PG_DATABASES.owns_any():
        import asyncio

        asyncio.run(PG_DATABASES.drop_all())
