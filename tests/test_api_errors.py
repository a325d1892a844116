"""API errors map in one place, and an app can answer them its own way.

Every refusal of a REST route is a :class:`SchedulerAPIError` (status, message, field,
the error behind it) answered by the extension's handler, unless the app registered its
own with ``@app.errorhandler(SchedulerAPIError)``. An app's handler for 404 pages is not
one of them: the API keeps answering JSON.
"""

from __future__ import annotations

from typing import Any

from quart import Quart

from quart_sched import APScheduler, JobLookupError, SchedulerAPIError
from quart_sched.errors import ValidationError


def make_app() -> Quart:
    app = Quart(__name__)
    app.config["SCHEDULER_API_ENABLED"] = True
    app.config["SCHEDULER_HISTORY"] = False
    return app


async def test_default_answers_are_error_message_json() -> None:
    app = make_app()
    APScheduler(app=app)
    client = app.test_client()
    missing = await client.get("/scheduler/jobs/nope")
    assert missing.status_code == 404
    assert await missing.get_json() == {"error_message": "Job 'nope' not found"}
    bad = await client.post("/scheduler/jobs", json={"id": "x"})
    assert bad.status_code == 400
    body = await bad.get_json()
    assert body["field"] == "func" and "func" in body["error_message"]


async def test_an_app_handler_registered_after_init_app_answers_instead() -> None:
    app = make_app()
    APScheduler(app=app)
    seen: list[SchedulerAPIError] = []

    @app.errorhandler(SchedulerAPIError)
    async def problem_json(error: SchedulerAPIError) -> Any:
        seen.append(error)
        return {"type": "about:blank", "status": error.status, "detail": error.message}, (
            error.status
        )

    client = app.test_client()
    missing = await client.get("/scheduler/jobs/nope")
    assert missing.status_code == 404
    assert await missing.get_json() == {
        "type": "about:blank",
        "status": 404,
        "detail": "Job 'nope' not found",
    }
    assert isinstance(seen[-1].__cause__, JobLookupError)
    bad = await client.post("/scheduler/jobs", json={"id": "x", "func": 3})
    assert bad.status_code == 400
    assert seen[-1].field == "func" and isinstance(seen[-1].__cause__, ValidationError)


async def test_an_app_handler_registered_before_init_app_is_kept() -> None:
    app = make_app()

    @app.errorhandler(SchedulerAPIError)
    async def mine(error: SchedulerAPIError) -> Any:
        return {"mine": error.status}, error.status

    APScheduler(app=app)
    missing = await app.test_client().get("/scheduler/jobs/nope")
    assert await missing.get_json() == {"mine": 404}


async def test_an_apps_404_page_leaves_the_api_json() -> None:
    app = make_app()
    APScheduler(app=app)

    @app.errorhandler(404)
    async def page(_error: Exception) -> Any:
        return "<h1>Not here</h1>", 404

    client = app.test_client()
    assert await (await client.get("/elsewhere")).get_data(as_text=True) == "<h1>Not here</h1>"
    missing = await client.get("/scheduler/jobs/nope")
    assert await missing.get_json() == {"error_message": "Job 'nope' not found"}
