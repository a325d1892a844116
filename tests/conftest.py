from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from quart import Quart

from quart_sched import APScheduler

_names = itertools.count()


@pytest.fixture
def app() -> Quart:
    """A fresh app; tests set app.config before using the `scheduler` fixture."""
    app = Quart(f"test_app_{next(_names)}")
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 2
    return app


@pytest.fixture
def scheduler(app: Quart) -> Iterator[APScheduler]:
    """An extension bound to `app`, shut down after the test whatever happened."""
    ext = APScheduler(app=app)
    yield ext
    if ext.running:
        ext.shutdown(wait=False)


@pytest.fixture
async def serving(app: Quart, scheduler: APScheduler) -> AsyncIterator[APScheduler]:
    """The app serving (before_serving ran) with its scheduler started."""
    scheduler.start()
    async with app.test_app():
        yield scheduler
