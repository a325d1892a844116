"""The REST API: Flask-APScheduler's 13 routes, as async handlers, plus a few read-only ones.

Every route goes through :func:`_guarded`, the one place that applies auth, refuses
cross-site browser writes and maps errors to status codes. Handlers only call the
extension's public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

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
    SchedulerAlreadyRunningError,
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


def _guarded(ext: APScheduler, view: View) -> View:
    @wraps(view)
    async def guarded(**kwargs: Any) -> Response:
        if ext.auth is not None:
            credentials = ext.auth.get_authorization()
            if credentials is None or not await ext.check_credentials(credentials):
                response = Response("Access Denied", status=401)
                response.headers["WWW-Authenticate"] = ext.auth.get_authenticate_header()
                return response
        if request.method in UNSAFE_METHODS and _cross_site():
            return error(403, "cross-site request refused: call the API from the same origin")
        try:
            return await view(ext, **kwargs)
        except ValidationError as exc:
            return error(400, str(exc))
        except FunctionNotAllowedError as exc:
            return error(403, str(exc))
        except JobLookupError:
            return error(404, f"Job {kwargs.get('job_id')!r} not found")
        except ConflictingIdError:
            return error(409, "a job with this id already exists")
        except JobNotLoadableError as exc:
            return error(409, str(exc))
        except (JobStoreUnavailableError, HistoryUnavailableError) as exc:
            return error(503, str(exc))

    return guarded


def register_api(ext: APScheduler, app: Quart) -> None:
    """Add the API's routes to ``app`` under ``ext.api_prefix``."""
    for name, rule, method in ROUTES:
        app.add_url_rule(
            ext.api_prefix + rule,
            ext.endpoint_prefix + name,
            _guarded(ext, VIEWS[name]),
            methods=[method],
        )


async def _jobs_json(ext: APScheduler, jobs: list[Any]) -> list[dict[str, Any]]:
    """Jobs as JSON, each with a summary of its last recorded run (null if none)."""
    data = [ext.job_to_dict(job) for job in jobs]
    last: dict[str, dict[str, Any]] = {}
    if ext.history is not None and data:
        # Unavailable history: the jobs are still worth showing; the runs routes say why.
        with contextlib.suppress(HistoryUnavailableError):
            last = await ext.get_last_runs([item["id"] for item in data])
    for item in data:
        run = last.get(item["id"])
        item["last_run"] = None if run is None else {key: run[key] for key in LAST_RUN_KEYS}
    return data


LAST_RUN_KEYS = ("run_id", "outcome", "started_at", "finished_at", "duration", "error")


async def _job_json(ext: APScheduler, job_id: str, status: int = 200) -> Response:
    job = await ext.offload(ext.get_job, job_id)
    if job is None:
        raise JobLookupError(job_id)
    return await _written_job_json(ext, job, status)


async def _written_job_json(ext: APScheduler, job: Any, status: int = 200) -> Response:
    """The answer to a write: the job as the write left it, with no second store read.

    (Read back, a store that fails between the write and the read would turn a write
    that stuck into a 503, which says that nothing changed.)
    """
    return json_response((await _jobs_json(ext, [job]))[0], status)


def _import_error(exc: Exception, func: str | None) -> ValidationError:
    if func is not None and isinstance(exc, LookupError):
        return ValidationError("func", f"func {func!r} cannot be imported: {exc}")
    if isinstance(exc, ValueError) and "argument" in str(exc):  # APScheduler's signature check
        return ValidationError("args", f"args and kwargs do not fit the function: {exc}")
    return ValidationError("body", str(exc))


# ------------------------------------------------------------------------------ views


async def get_scheduler_info(ext: APScheduler) -> Response:
    return json_response(
        {"current_host": ext.host_name, "allowed_hosts": ext.allowed_hosts, "running": ext.running}
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


def _check_fires(ext: APScheduler, spec: dict[str, Any]) -> None:
    """Refuse a trigger that never fires (``day: 31, month: 2``, an end in the past)."""
    if "trigger" not in spec:
        return
    trigger_name, trigger_args = _jobs.pop_trigger(dict(spec))
    try:
        trigger = ext.scheduler.make_trigger(trigger_name, trigger_args)
        first = trigger.get_next_fire_time(None, datetime.now(ext.scheduler.timezone))
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ValidationError("trigger", f"trigger: {exc}") from None
    if first is None:
        raise ValidationError("trigger", "this trigger never fires: check its fields and dates")
    grace = spec.get("misfire_grace_time", ext.scheduler.job_defaults["misfire_grace_time"])
    if trigger_name == "date" and grace is not None:
        late = datetime.now(timezone.utc) - first
        if late.total_seconds() > grace:
            raise ValidationError(
                "run_date",
                f"run_date is {late} in the past, beyond misfire_grace_time ({grace} s): "
                "the run would be dropped as missed",
            )


async def add_job(ext: APScheduler) -> Response:
    spec = _json.parse_job_body(await read_json(), tz=ext.scheduler.timezone)
    _check_fires(ext, spec)
    ext.check_api_function(spec["func"])
    try:
        job = await ext.offload(ext.add_job, **spec)
    except ConflictingIdError:
        return error(409, f"Job {spec['id']!r} already exists")
    except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
        raise _import_error(exc, spec["func"]) from None
    return json_response((await _jobs_json(ext, [job]))[0])


async def get_job(ext: APScheduler, job_id: str) -> Response:
    return await _job_json(ext, job_id)


async def get_jobs(ext: APScheduler) -> Response:
    jobs = await ext.offload(ext.get_jobs)
    return json_response(await _jobs_json(ext, jobs))


async def delete_job(ext: APScheduler, job_id: str) -> Response:
    await ext.offload(ext.remove_job, job_id)
    return no_content()


async def update_job(ext: APScheduler, job_id: str) -> Response:
    changes = _json.parse_job_body(
        await read_json(), tz=ext.scheduler.timezone, partial=True, url_id=job_id
    )
    changes.pop("id", None)
    _check_fires(ext, changes)
    if "func" in changes:
        ext.check_api_function(changes["func"])
    if not changes:
        return await _job_json(ext, job_id)
    try:
        job = await ext.offload(ext.modify_job, job_id, **changes)
    except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
        if isinstance(exc, (JobLookupError, ConflictingIdError)):
            raise
        raise _import_error(exc, changes.get("func")) from None
    return await _written_job_json(ext, job)


async def pause_job(ext: APScheduler, job_id: str) -> Response:
    return await _written_job_json(ext, await ext.offload(ext.pause_job, job_id))


async def resume_job(ext: APScheduler, job_id: str) -> Response:
    job = await ext.offload(ext.resume_job, job_id)
    if job is None:  # its schedule had ended and resuming removed it: Flask-APScheduler's null
        return json_response(None)
    return await _written_job_json(ext, job)


async def run_job(ext: APScheduler, job_id: str) -> Response:
    wait = request.args.get("wait", "true").lower() not in ("false", "0", "no")
    job = await ext.offload(ext.get_job, job_id)
    if job is None:
        raise JobLookupError(job_id)
    try:
        future = ext.submit_run(job)
    except SchedulerNotRunningError:
        raise ValidationError("state", "the scheduler is not running: POST /start first") from None
    except MaxInstancesReachedError:
        return error(
            409, f"Job {job_id!r} is already running its max_instances ({job.max_instances}) times"
        )
    if not wait:
        return json_response((await _jobs_json(ext, [job]))[0], 202)
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout=ext.api_run_timeout)
    except asyncio.TimeoutError:
        return json_response((await _jobs_json(ext, [job]))[0], 202)  # it goes on
    except Exception as exc:  # the job's own failure, already logged by the executor
        return error(500, f"Job {job_id!r} failed: {type(exc).__name__}: {exc}")
    return await _job_json(ext, job_id)


async def get_functions(ext: APScheduler) -> Response:
    return json_response(ext.api_functions())


async def get_next_run_times(ext: APScheduler, job_id: str) -> Response:
    raw = request.args.get("n", "5")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not (
        1 <= int(raw) <= MAX_NEXT_RUN_TIMES
    ):
        raise ValidationError("n", f"n must be an integer from 1 to {MAX_NEXT_RUN_TIMES}")
    job = await ext.offload(ext.get_job, job_id)
    if job is None:
        raise JobLookupError(job_id)
    times: list[datetime] = ext.next_run_times(job, int(raw))
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
        response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return response


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
