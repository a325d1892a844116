"""The REST API: Flask-APScheduler's 13 routes, as async handlers, plus a few read-only ones.

Every route goes through :func:`_guarded`, the one place that applies auth, refuses
cross-site browser writes and maps errors to status codes. Handlers translate HTTP to the
calls of the extension's :class:`~quart_sched._service.SchedulerService` (what the CLI and
the dashboard call too) and back; the API's rules live there, not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED
from quart import Response, request

from . import _jobs, _json
from ._history import OUTCOMES, RUNNING
from ._openapi import openapi_document
from .errors import (
    ConflictingIdError,
    FunctionNotAllowedError,
    HistoryUnavailableError,
    JobLookupError,
    JobNotLoadableError,
    JobStoreUnavailableError,
    MaxInstancesReachedError,
    QuartSchedError,
    SchedulerAlreadyRunningError,
    SchedulerAPIError,
    SchedulerNotRunningError,
    ValidationError,
)

if TYPE_CHECKING:
    from quart import Quart

    from ._extension import APScheduler

logger = logging.getLogger("quart_sched")

View = Callable[..., Awaitable[Response]]
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_NEXT_RUN_TIMES = 100

#: (view name, rule, method) — Flask-APScheduler's 13, then ours.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("get_scheduler_info", "", "GET"),
    ("pause_scheduler", "/pause", "POST"),
    ("resume_scheduler", "/resume", "POST"),
    ("start_scheduler", "/start", "POST"),
    ("shutdown_scheduler", "/shutdown", "POST"),
    ("add_job", "/jobs", "POST"),
    ("get_job", "/jobs/<job_id>", "GET"),
    ("get_jobs", "/jobs", "GET"),
    ("delete_job", "/jobs/<job_id>", "DELETE"),
    ("update_job", "/jobs/<job_id>", "PATCH"),
    ("pause_job", "/jobs/<job_id>/pause", "POST"),
    ("resume_job", "/jobs/<job_id>/resume", "POST"),
    ("run_job", "/jobs/<job_id>/run", "POST"),
    ("get_functions", "/functions", "GET"),
    ("get_next_run_times", "/jobs/<job_id>/next_run_times", "GET"),
    ("get_openapi", "/openapi.json", "GET"),
    ("get_job_runs", "/jobs/<job_id>/runs", "GET"),
    ("get_runs", "/runs", "GET"),
    ("get_running_runs", "/runs/running", "GET"),
)
MAX_RUNS_PAGE = 500
NOT_RUNNING = "the scheduler is not running: POST /start first"
OUTCOME_FILTERS = frozenset({*OUTCOMES, RUNNING})


# ---------------------------------------------------------------------------- helpers


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_json.dumps(value), status=status, mimetype="application/json")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"error_message": message}, status)
    if headers:
        response.headers.update(headers)
    return response


def no_content() -> Response:
    return Response("", status=204)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unstorable(value: Any) -> str | None:
    """What in ``value`` JSON (or UTF-8) cannot carry back out: 1e400 parses to inf, and
    ``"\\ud800"`` to a lone surrogate. None when all is well."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "a number too large for JSON"
        if isinstance(item, str) and not _is_utf8(item):
            return "a lone surrogate (\\ud800-\\udfff), which is not text"
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_json(*, required: bool = True) -> Any:
    """The request body as JSON, with or without a JSON Content-Type; None when empty."""
    data = await request.get_data(as_text=False)
    assert isinstance(data, bytes)
    if not data.strip():
        if required:
            raise ValidationError("body", "the body must be a JSON object")
        return None
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValidationError("body", "the body must be UTF-8 encoded JSON") from None
    except ValueError as exc:
        raise ValidationError("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("body", "the JSON is nested too deeply") from None
    fields = body.items() if isinstance(body, dict) else [("body", body)]
    for field, value in fields:
        problem = _unstorable([field, value])
        if problem is not None:
            name = field if _is_utf8(field) else "body"
            raise ValidationError(name, f"{name} holds {problem}")
    return body


def _cross_site() -> bool:
    """True for a browser request another site made (form posts riding on cached auth)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # curl, scripts, server-to-server: no Origin, nothing to check
    _scheme, _, rest = origin.partition("://")
    return not rest or rest.rstrip("/").lower() != request.host.lower()


def _host_trusted(trusted: tuple[str, ...]) -> bool:
    """Whether the request's Host names one of ``trusted`` (port ignored; ``.example.com``
    matches it and its subdomains). A DNS-rebinding page sends its own name as Host, and
    as Origin, so the cross-site check cannot see it: only the name can."""
    host = request.host.lower()
    # Drop the port; an IPv6 literal ([::1]:8000) keeps its brackets.
    ipv6 = host.startswith("[")
    name = host.partition("]")[0] + "]" if ipv6 else host.partition(":")[0].rstrip(".")
    return bool(name) and any(
        name == allowed
        or (allowed.startswith(".") and (name.endswith(allowed) or name == allowed[1:]))
        for allowed in trusted
    )


def _guarded(ext: APScheduler, view: View) -> View:
    @wraps(view)
    async def guarded(**kwargs: Any) -> Response:
        trusted = ext.api_trusted_hosts
        if trusted is not None and not _host_trusted(trusted):
            raise SchedulerAPIError(
                400, f"host {request.host!r} is not trusted: see SCHEDULER_API_TRUSTED_HOSTS"
            )
        if ext.auth is not None:
            credentials = ext.auth.get_authorization()
            if credentials is None or not await ext.check_credentials(credentials):
                # Flask-APScheduler's plain-text answer, kept as it is for its clients.
                response = Response("Access Denied", status=401)
                response.headers["WWW-Authenticate"] = ext.auth.get_authenticate_header()
                return response
        if request.method in UNSAFE_METHODS and _cross_site():
            raise SchedulerAPIError(
                403, "cross-site request refused: call the API from the same origin"
            )
        try:
            return await view(ext, **kwargs)
        except QuartSchedError as exc:
            if isinstance(exc, SchedulerAPIError):
                raise
            raise api_error(exc, kwargs.get("job_id")) from exc
        except (JobLookupError, ConflictingIdError, MaxInstancesReachedError) as exc:
            raise api_error(exc, kwargs.get("job_id")) from exc

    return guarded


def api_error(exc: Exception, job_id: str | None = None) -> SchedulerAPIError:
    """The one place that maps what went wrong to an HTTP status and message."""
    if isinstance(exc, ValidationError):
        # "field" lets a form put the message next to the input at fault.
        return SchedulerAPIError(400, str(exc), field=exc.field)
    if isinstance(exc, FunctionNotAllowedError):
        return SchedulerAPIError(403, str(exc))
    if isinstance(exc, JobLookupError):
        return SchedulerAPIError(404, f"Job {job_id!r} not found")
    if isinstance(exc, ConflictingIdError):  # APScheduler's message names the id
        return SchedulerAPIError(409, str(exc.args[0]) if exc.args else "the job id is taken")
    if isinstance(exc, MaxInstancesReachedError):
        return SchedulerAPIError(
            409, f"Job {job_id!r} is already running as many times as its max_instances allows"
        )
    if isinstance(exc, JobNotLoadableError):
        return SchedulerAPIError(409, str(exc))
    if isinstance(exc, (JobStoreUnavailableError, HistoryUnavailableError)):
        return SchedulerAPIError(503, str(exc))
    return SchedulerAPIError(500, f"{type(exc).__name__}: {exc}")


async def api_error_response(exc: SchedulerAPIError) -> Response:
    """The default answer to :class:`SchedulerAPIError`: ``{"error_message": ...}``."""
    return json_response(exc.to_dict(), exc.status)


def register_api(ext: APScheduler, app: Quart) -> None:
    """Add the API's routes to ``app`` under ``ext.api_prefix``, and the dashboard's
    (``SCHEDULER_UI_ENABLED``)."""
    if SchedulerAPIError not in app.error_handler_spec[None][None]:  # the app's own wins
        app.register_error_handler(SchedulerAPIError, api_error_response)
    for name, rule, method in ROUTES:
        app.add_url_rule(
            ext.api_prefix + rule,
            ext.endpoint_prefix + name,
            _guarded(ext, VIEWS[name]),
            methods=[method],
        )
    if ext.config is None or ext.config.ui_enabled:
        from ._dashboard import register_dashboard

        register_dashboard(ext, app, _guarded)  # same auth and cross-site refusal


# ------------------------------------------------------------------------------ views


STATE_NAMES = {STATE_STOPPED: "stopped", STATE_RUNNING: "running", STATE_PAUSED: "paused"}


async def get_scheduler_info(ext: APScheduler) -> Response:
    return json_response(
        {
            "current_host": ext.host_name,
            "allowed_hosts": ext.allowed_hosts,
            "running": ext.running,
            "state": STATE_NAMES[ext.state],  # ours: "running" stays true while paused
            **await ext.leadership(),  # role, leader, coordination
        }
    )


async def pause_scheduler(ext: APScheduler) -> Response:
    try:
        ext.pause()
    except SchedulerNotRunningError:
        raise ValidationError("state", "the scheduler is not running") from None
    return no_content()


async def resume_scheduler(ext: APScheduler) -> Response:
    try:
        ext.resume()
    except SchedulerNotRunningError:
        raise ValidationError("state", "the scheduler is not running") from None
    return no_content()


async def start_scheduler(ext: APScheduler) -> Response:
    try:
        ext.start()
    except SchedulerAlreadyRunningError:
        raise ValidationError("state", "the scheduler is already running") from None
    if not ext.running:
        raise ValidationError(
            "state", f"host {ext.host_name!r} may not run jobs (SCHEDULER_ALLOWED_HOSTS)"
        )
    return no_content()


async def shutdown_scheduler(ext: APScheduler) -> Response:
    body = await read_json(required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValidationError("body", 'the body must be a JSON object such as {"wait": false}')
    unknown = set(body) - {"wait"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], f"unknown field {sorted(unknown)[0]!r}")
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise ValidationError("wait", "wait must be true or false")
    if not ext.running:
        raise ValidationError("state", "the scheduler is not running")
    ext.shutdown(wait=wait)
    return no_content()


async def add_job(ext: APScheduler) -> Response:
    return json_response(await ext.service.add_job(await read_json()))


async def get_job(ext: APScheduler, job_id: str) -> Response:
    return json_response(await ext.service.get_job(job_id))


async def get_jobs(ext: APScheduler) -> Response:
    return json_response(await ext.service.get_jobs())


async def delete_job(ext: APScheduler, job_id: str) -> Response:
    await ext.service.remove_job(job_id)
    return no_content()


async def update_job(ext: APScheduler, job_id: str) -> Response:
    return json_response(await ext.service.modify_job(job_id, await read_json()))


async def pause_job(ext: APScheduler, job_id: str) -> Response:
    return json_response(await ext.service.pause_job(job_id))


async def resume_job(ext: APScheduler, job_id: str) -> Response:
    return json_response(await ext.service.resume_job(job_id))


async def run_job(ext: APScheduler, job_id: str) -> Response:
    wait = request.args.get("wait", "true").lower() not in ("false", "0", "no")
    job, future = await ext.service.start_run(job_id)
    if not wait:
        return json_response((await ext.jobs_to_dicts([job]))[0], 202)
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout=ext.api_run_timeout)
    except asyncio.TimeoutError:
        return json_response((await ext.jobs_to_dicts([job]))[0], 202)  # it goes on
    except Exception as exc:  # the job's own failure, already logged by the executor
        raise SchedulerAPIError(
            500, f"Job {job_id!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return json_response(await ext.service.get_job(job_id))


async def get_functions(ext: APScheduler) -> Response:
    return json_response(ext.api_functions())


async def get_next_run_times(ext: APScheduler, job_id: str) -> Response:
    raw = request.args.get("n", "5")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not (
        1 <= int(raw) <= MAX_NEXT_RUN_TIMES
    ):
        raise ValidationError("n", f"n must be an integer from 1 to {MAX_NEXT_RUN_TIMES}")
    after = None
    raw_after = request.args.get("after")
    if raw_after is not None:  # naive: the scheduler's time zone, as job dates
        try:
            after = _jobs.parse_datetime(raw_after, "after")
        except ValueError as exc:
            raise ValidationError("after", str(exc)) from None
    job = await ext.service.find_job(job_id)
    times: list[datetime] = ext.next_run_times(job, int(raw), after)
    return json_response({"id": job.id, "next_run_times": [_json.isoformat(t) for t in times]})


async def get_openapi(ext: APScheduler) -> Response:
    return json_response(openapi_document(ext.api_prefix))


def _query_time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = _jobs.parse_datetime(raw, name)
    except ValueError as exc:
        raise ValidationError(name, str(exc)) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _runs_query() -> dict[str, Any]:
    """limit, cursor, outcome (comma-separated or repeated), since, until."""
    raw_limit = request.args.get("limit", "50")
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4) or not (
        1 <= int(raw_limit) <= MAX_RUNS_PAGE
    ):
        raise ValidationError("limit", f"limit must be an integer from 1 to {MAX_RUNS_PAGE}")
    cursor = request.args.get("cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise ValidationError("cursor", "cursor must be a next_cursor this API gave")
    outcomes = [o for raw in request.args.getlist("outcome") for o in raw.split(",") if o]
    unknown = sorted(set(outcomes) - OUTCOME_FILTERS)
    if unknown:
        known = ", ".join(sorted(OUTCOME_FILTERS))
        raise ValidationError("outcome", f"unknown outcome {unknown[0]!r}; use: {known}")
    return {
        "limit": int(raw_limit),
        "cursor": cursor,
        "outcome": outcomes or None,
        "since": _query_time("since"),
        "until": _query_time("until"),
    }


def _page_response(page: Any) -> Response:
    response = json_response(page.runs)
    if page.next_cursor is not None:
        response.headers["X-Next-Cursor"] = page.next_cursor
        args = request.args.to_dict(flat=False)
        args["cursor"] = [page.next_cursor]
        query = urlencode(args, doseq=True)
        response.headers["Link"] = f'<{_encoded_path()}?{query}>; rel="next"'
    return response


def _encoded_path() -> str:
    """This request's path, percent-encoded, for a link back to it.

    ``request.path`` is decoded: a job id holding ``?``, ``#``, ``/``, a space or non-ASCII
    text would cut or break the link. So the path is built from the route, each of its
    segments (a job id is one) encoded on its own.
    """
    rule = request.url_rule
    assert rule is not None  # only views call this
    args = request.view_args or {}
    segments = []
    for part in rule.rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = str(args[part[1:-1].rpartition(":")[2]])
        segments.append(quote(part, safe=""))
    return quote(request.root_path, safe="/") + "/".join(segments)


async def get_job_runs(ext: APScheduler, job_id: str) -> Response:
    """A job's runs, newest first (a removed job's runs too: history outlives jobs)."""
    return _page_response(await ext.get_runs(job_id, **_runs_query()))


async def get_runs(ext: APScheduler) -> Response:
    return _page_response(await ext.get_runs(None, **_runs_query()))


async def get_running_runs(ext: APScheduler) -> Response:
    return json_response(await ext.get_running_runs())


VIEWS: dict[str, Callable[..., Awaitable[Response]]] = {
    name: globals()[name] for name, _rule, _method in ROUTES
}
