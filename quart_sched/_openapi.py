"""The OpenAPI 3.1 document of the REST API, served at ``<prefix>/openapi.json``.

A test validates real responses against these schemas, so they stay true.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from ._json import CRON_FIELDS, INTERVAL_UNITS, MAX_ID_LENGTH

_DATETIME = {"type": "string", "format": "date-time"}
_NULLABLE_DATETIME = {"type": ["string", "null"], "format": "date-time"}
_CRON_VALUE = {"type": ["integer", "string"]}
_UNIT = {"type": "number", "minimum": 0}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json_content(_ref("Error"))}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_ID_LENGTH},
}
_TRIGGER_PROPERTIES: dict[str, Any] = {
    "trigger": {
        "anyOf": [
            {"type": "string", "enum": ["date", "interval", "cron"]},
            {
                "type": "object",
                "description": "Flask-APScheduler's legacy form: "
                '{"type": "cron", "minute": 5} (type defaults to date)',
            },
            {"type": "null", "description": "no trigger: run once, now"},
        ]
    },
    "run_date": _NULLABLE_DATETIME,
    "start_date": _NULLABLE_DATETIME,
    "end_date": _NULLABLE_DATETIME,
    "timezone": {"type": ["string", "null"], "description": "IANA zone, e.g. Europe/Paris"},
    "jitter": {"type": ["number", "null"], "minimum": 0},
    **{unit: _UNIT for unit in INTERVAL_UNITS},
    **{field: _CRON_VALUE for field in CRON_FIELDS},
}
_JOB_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    "name": {"type": "string"},
    "func": {"type": "string", "description": "'module:function', allowed for the API"},
    "args": {"type": "array"},
    "kwargs": {"type": "object"},
    "misfire_grace_time": {"type": ["integer", "null"], "minimum": 1},
    "max_instances": {"type": "integer", "minimum": 1},
    "coalesce": {"type": "boolean"},
    "next_run_time": _NULLABLE_DATETIME,
}

_RUN_PROPERTIES: dict[str, Any] = {
    "run_id": {"type": "string"},
    "job_id": {"type": "string"},
    "outcome": {
        "type": "string",
        "enum": ["success", "error", "missed", "skipped", "interrupted", "running"],
    },
    "scheduled_run_time": _NULLABLE_DATETIME,
    "started_at": _NULLABLE_DATETIME,
    "finished_at": _NULLABLE_DATETIME,
    "duration": {"type": ["number", "null"], "minimum": 0},
    "error": {"type": ["string", "null"], "description": "'Type: message'"},
    "error_type": {"type": ["string", "null"]},
    "error_message": {"type": ["string", "null"]},
    "traceback": {"type": ["string", "null"]},
    "host": {"type": "string"},
    "pid": {"type": "integer"},
    "epoch": {
        "type": ["integer", "null"],
        "description": "the leader's epoch the run was recorded under (null: not leading)",
    },
}
_LAST_RUN_KEYS = ("run_id", "outcome", "started_at", "finished_at", "duration", "error")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error_message"],
        "properties": {
            "error_message": {"type": "string"},
            "field": {
                "type": "string",
                "description": "400 only: the request field at fault, or body or state",
            },
        },
    },
    "SchedulerInfo": {
        "type": "object",
        "required": ["current_host", "allowed_hosts", "running"],
        "properties": {
            "current_host": {"type": "string"},
            "allowed_hosts": {"type": "array", "items": {"type": "string"}},
            "running": {"type": "boolean"},
            "state": {"type": "string", "enum": ["running", "paused", "stopped"]},
            "role": {
                "type": ["string", "null"],
                "enum": ["leader", "standby", None],
                "description": "This process runs the jobs (leader) or serves the API only "
                "(standby); null while the scheduler is stopped.",
            },
            "leader": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["host", "pid", "since", "epoch"],
                        "properties": {
                            "host": {"type": "string"},
                            "pid": {"type": "integer"},
                            "since": {"type": "string", "format": "date-time"},
                            "epoch": {"type": "integer"},
                        },
                    },
                ],
            },
            "coordination": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["backend", "location", "error"],
                        "properties": {
                            "backend": {"type": "string", "enum": ["file", "postgresql", "redis"]},
                            "location": {"type": "string"},
                            "error": {"type": ["string", "null"]},
                        },
                    },
                ],
            },
        },
    },
    "Job": {
        "type": "object",
        "required": [
            "id",
            "name",
            "func",
            "args",
            "kwargs",
            "trigger",
            "misfire_grace_time",
            "max_instances",
            "next_run_time",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "func": {"type": ["string", "null"]},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "trigger": {"type": "string"},
            "run_date": _DATETIME,
            "start_date": _DATETIME,
            "end_date": _DATETIME,
            **{unit: {"type": "number", "exclusiveMinimum": 0} for unit in INTERVAL_UNITS},
            **{field: {"type": "string"} for field in CRON_FIELDS},
            "misfire_grace_time": {"type": ["integer", "null"]},
            "max_instances": {"type": ["integer", "null"]},
            "next_run_time": _NULLABLE_DATETIME,
            "running_instances": {"type": "integer", "minimum": 0},
            "trigger_description": {
                "type": "string",
                "description": 'the trigger in words, e.g. "every 3 seconds"',
            },
            "load_error": {
                "type": ["string", "null"],
                "description": "Why the stored job cannot be loaded now (null when it can): "
                "it is kept, and runs again once its code loads.",
            },
            "last_run": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": list(_LAST_RUN_KEYS),
                        "properties": {key: _RUN_PROPERTIES[key] for key in _LAST_RUN_KEYS},
                    },
                    {"type": "null"},
                ]
            },
        },
    },
    "Run": {
        "type": "object",
        "required": list(_RUN_PROPERTIES),
        "properties": _RUN_PROPERTIES,
    },
    "RunList": {"type": "array", "items": _ref("Run")},
    "JobList": {"type": "array", "items": _ref("Job")},
    "NewJob": {
        "type": "object",
        "required": ["id", "func"],
        "additionalProperties": False,
        "properties": {**_JOB_FIELDS, **_TRIGGER_PROPERTIES},
    },
    "JobChanges": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_JOB_FIELDS, **_TRIGGER_PROPERTIES},
    },
    "Shutdown": {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {"wait": {"type": "boolean", "default": True}},
    },
    "Functions": {
        "type": "object",
        "required": ["functions", "patterns"],
        "properties": {
            "functions": {"type": "array", "items": {"type": "string"}},
            "patterns": {"type": "array", "items": {"type": "string"}},
        },
    },
    "NextRunTimes": {
        "type": "object",
        "required": ["id", "next_run_times"],
        "properties": {
            "id": {"type": "string"},
            "next_run_times": {"type": "array", "items": _DATETIME},
        },
    },
}

_COMMON_ERRORS = {
    "401": {"description": "Credentials missing or refused (when SCHEDULER_AUTH is set)"},
}
_WRITE_ERRORS = {
    **_COMMON_ERRORS,
    "403": _error("Cross-site browser request, or a function the API may not schedule"),
}
_JOB_OK = {"description": "The job", **_json_content(_ref("Job"))}
_NOT_FOUND = _error("No job with this id")
_STORE_DOWN = _error("A job store cannot be reached")
_STATE = _error("The scheduler is not in a state that allows this")


_RUNS_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "the X-Next-Cursor of the previous page",
        "schema": {"type": "string"},
    },
    {
        "name": "outcome",
        "in": "query",
        "description": "comma-separated outcomes to keep",
        "schema": {"type": "string"},
    },
    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
]
_RUN_PAGE = {
    "description": "Runs, newest first",
    "headers": {
        "X-Next-Cursor": {"schema": {"type": "string"}, "description": "absent on the last page"},
        "Link": {"schema": {"type": "string"}, "description": 'the next page, rel="next"'},
    },
    **_json_content(_ref("RunList")),
}
_HISTORY_DOWN = _error("Run history is off or its file cannot be read")


def _paths(prefix: str) -> dict[str, Any]:
    job = f"{prefix}/jobs/{{job_id}}"
    return {
        f"{job}/runs": {
            "parameters": [_JOB_ID, *_RUNS_PARAMETERS],
            "get": {
                "operationId": "get_job_runs",
                "responses": {
                    "200": _RUN_PAGE,
                    "400": _error("A bad query parameter"),
                    "503": _HISTORY_DOWN,
                },
            },
        },
        f"{prefix}/runs": {
            "parameters": _RUNS_PARAMETERS,
            "get": {
                "operationId": "get_runs",
                "responses": {
                    "200": _RUN_PAGE,
                    "400": _error("A bad query parameter"),
                    "503": _HISTORY_DOWN,
                },
            },
        },
        f"{prefix}/runs/running": {
            "get": {
                "operationId": "get_running_runs",
                "responses": {
                    "200": {"description": "Runs under way", **_json_content(_ref("RunList"))},
                    "503": _HISTORY_DOWN,
                },
            },
        },
        prefix or "/": {
            "get": {
                "operationId": "get_scheduler_info",
                "responses": {
                    "200": {
                        "description": "Scheduler info",
                        **_json_content(_ref("SchedulerInfo")),
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        **{
            f"{prefix}/{action}": {
                "post": {
                    "operationId": f"{action}_scheduler",
                    "responses": {"204": {"description": "Done"}, "400": _STATE, **_WRITE_ERRORS},
                }
            }
            for action in ("pause", "resume", "start")
        },
        f"{prefix}/shutdown": {
            "post": {
                "operationId": "shutdown_scheduler",
                "requestBody": {"required": False, **_json_content(_ref("Shutdown"))},
                "responses": {
                    "204": {"description": "Shut down"},
                    "400": _error("Not running, or a bad body"),
                    **_WRITE_ERRORS,
                },
            }
        },
        f"{prefix}/jobs": {
            "get": {
                "operationId": "get_jobs",
                "responses": {
                    "200": {"description": "Every job", **_json_content(_ref("JobList"))},
                    "503": _STORE_DOWN,
                    **_COMMON_ERRORS,
                },
            },
            "post": {
                "operationId": "add_job",
                "requestBody": {"required": True, **_json_content(_ref("NewJob"))},
                "responses": {
                    "200": _JOB_OK,
                    "400": _error("Invalid job definition; error_message names the field"),
                    "409": _error("A job with this id exists"),
                    "503": _STORE_DOWN,
                    **_WRITE_ERRORS,
                },
            },
        },
        job: {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "get_job",
                "responses": {"200": _JOB_OK, "404": _NOT_FOUND, "503": _STORE_DOWN},
            },
            "delete": {
                "operationId": "delete_job",
                "responses": {
                    "204": {"description": "Deleted"},
                    "404": _NOT_FOUND,
                    "503": _STORE_DOWN,
                    **_WRITE_ERRORS,
                },
            },
            "patch": {
                "operationId": "update_job",
                "requestBody": {"required": True, **_json_content(_ref("JobChanges"))},
                "responses": {
                    "200": _JOB_OK,
                    "400": _error("Invalid change; nothing was changed"),
                    "404": _NOT_FOUND,
                    "503": _STORE_DOWN,
                    **_WRITE_ERRORS,
                },
            },
        },
        f"{job}/pause": {
            "parameters": [_JOB_ID],
            "post": {
                "operationId": "pause_job",
                "responses": {"200": _JOB_OK, "404": _NOT_FOUND, **_WRITE_ERRORS},
            },
        },
        f"{job}/resume": {
            "parameters": [_JOB_ID],
            "post": {
                "operationId": "resume_job",
                "responses": {
                    "200": {
                        "description": "The job, or null when its schedule had ended and "
                        "resuming removed it",
                        **_json_content({"anyOf": [_ref("Job"), {"type": "null"}]}),
                    },
                    "404": _NOT_FOUND,
                    **_WRITE_ERRORS,
                },
            },
        },
        f"{job}/run": {
            "parameters": [
                _JOB_ID,
                {
                    "name": "wait",
                    "in": "query",
                    "description": "false, 0 or no (any case): answer 202 at once",
                    "schema": {"type": "string"},
                },
            ],
            "post": {
                "operationId": "run_job",
                "responses": {
                    "200": _JOB_OK,
                    "202": {"description": "Started, still running", **_json_content(_ref("Job"))},
                    "400": _STATE,
                    "404": _NOT_FOUND,
                    "409": _error("max_instances runs already under way"),
                    "500": _error("The job raised; error_message says what"),
                    **_WRITE_ERRORS,
                },
            },
        },
        f"{prefix}/functions": {
            "get": {
                "operationId": "get_functions",
                "responses": {
                    "200": {
                        "description": "What the API may schedule",
                        **_json_content(_ref("Functions")),
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        f"{job}/next_run_times": {
            "parameters": [
                _JOB_ID,
                {
                    "name": "n",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                },
                {
                    "name": "after",
                    "in": "query",
                    "description": "Fire times after this instant (default: now); "
                    "without an offset, in the scheduler's time zone",
                    "schema": {"type": "string"},
                },
            ],
            "get": {
                "operationId": "get_next_run_times",
                "responses": {
                    "200": {
                        "description": "Coming fire times",
                        **_json_content(_ref("NextRunTimes")),
                    },
                    "400": _error("Bad n or after"),
                    "404": _NOT_FOUND,
                },
            },
        },
        f"{prefix}/openapi.json": {
            "get": {
                "operationId": "get_openapi",
                "responses": {"200": {"description": "This document"}},
            }
        },
    }


def _with_common_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Auth guards every route (401); every route that reads a job can meet a job store
    that is down (503)."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            responses.setdefault("401", _COMMON_ERRORS["401"])
            if "{job_id}" in path or path.endswith("/jobs"):
                responses.setdefault("503", _STORE_DOWN)
    return paths


@cache
def _document(prefix: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "quart_sched scheduler API", "version": "1"},
        "paths": _with_common_errors(_paths(prefix)),
        # Which scheme applies depends on SCHEDULER_AUTH; none when it is unset.
        "security": [{}, {"basic": []}, {"bearer": []}],
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_document(prefix: str) -> dict[str, Any]:
    """The document for an API mounted at ``prefix`` (a copy: callers may change it)."""
    return copy.deepcopy(_document(prefix))
