"""Shapes of the JSON API's answers (they also document the API at ``/docs``).

Timestamps are UTC ISO 8601 strings ending in ``Z``; durations are seconds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = "ok"
    schema_revision: str | None


class Organisation(BaseModel):
    codops: str
    tasks: int = Field(description="active tasks")
    running: int = Field(description="tasks running now")


class RedisUsage(BaseModel):
    codops: str
    namespace: str = Field(description="the organisation's keys and channels start with this")
    user: str = Field(description="the organisation's Redis ACL user, which tasks get in PEACH_REDIS_URL")
    keys: int = Field(description="keys in the namespace (a lower bound unless complete)")
    memory_bytes: int = Field(description="their memory as MEMORY USAGE reports it (a lower bound unless complete)")
    complete: bool = Field(description="false: the bounded SCAN stopped before the end (redis.max_scan_keys)")
    scan_seconds: float


class Problem(BaseModel):
    kind: str = Field(description="sync, config or environment")
    scope: str = Field(description="the repository, or the organisation for environment problems")
    codops: str | None
    file: str | None
    line: int | None
    message: str
    created_at: str | None


class Task(BaseModel):
    codops: str
    name: str
    loop: str
    executor: str
    state: str = Field(description="PENDING, RUNNING or FINISHED within the loop's current iteration")
    last_status: str | None
    last_started_at: str | None
    last_duration_s: float | None
    version: str | None = Field(description="short hash of the last commit that touched the notebook")
    successes: int
    failures: int = Field(description="FAILURE and TIMEOUT runs (ABANDONED counts as neither)")
    repo: str
    notebook: str
    environment: str = Field(description="the named Python environment the task runs in: its `py_env`, "
                                         "else 'base' (the organisation's one environment in the tutorial's form)")
    defined_at: str | None
    freshness_s: float | None = Field(default=None, description="how old the last success may be, in seconds "
                                      "(the task's `freshness`, else its loop's default); null: none")
    stale: bool | None = Field(default=None, description="the last success is older than freshness_s (or there "
                               "is none and the task was defined longer ago); null: the task has no freshness")
    stale_at: str | None = Field(default=None, description="when the task is, or becomes, stale without a success")
    last_success_at: str | None = None
    last_success_run_id: int | None = None
    failures_in_row: int = Field(default=0, description="FAILURE and TIMEOUT runs since the last success")
    problems: list[Problem]
    last_run_id: int | None = None
    method: str | None = Field(None, description="the entry function; null: the whole notebook runs")
    full_notebook: bool | None = None
    timeout_s: float | None = Field(None, description="the timeout its definition gives, if any")
    run_limit_s: float | None = Field(None, description="a run's limit: the task's timeout within its loop's")
    dependencies: list[str] | None = Field(None, description="the dependencies its definition adds to its "
                                                             "organisation's environment")


class TaskList(BaseModel):
    codops: str
    tasks: list[Task]
    problems: list[Problem] = Field(description="the organisation's and its repositories' problems")


class Run(BaseModel):
    id: int
    codops: str
    task: str
    loop: str
    executor: str
    version: str | None
    commit: str | None
    started_at: str
    finished_at: str | None
    status: str = Field(description="RUNNING, SUCCESS, FAILURE, TIMEOUT or ABANDONED")
    duration_s: float | None
    exit_code: int | None
    signal: int | None
    error: str | None
    result: Any = None
    details: Any = None
    peak_memory_bytes: int | None = Field(description="peak memory of the run's processes (its cgroup), "
                                          "in bytes; null: not measured")
    cpu_seconds: float | None = Field(description="CPU time of the run's processes (user + system), in "
                                      "seconds; null: not measured")
    log_bytes: int
    log_dropped_bytes: int
    triggered_by: str | None = Field(default=None, description="who triggered this run; null: the normal order")
    trigger_id: int | None = None
    payload: Any = None
    attempt: int = Field(default=1, description="1: the first run of its iteration; 2, 3...: a retry "
                         "of a FAILURE or TIMEOUT (the task's `retries`)")
    retry_of: int | None = Field(default=None, description="for a retry: the id of the first attempt")
    log_pruned_at: str | None = Field(default=None, description="when retention removed this run's log and "
                                      "outputs (one line says so instead); null: kept")


class RunsPage(BaseModel):
    codops: str
    task: str
    runs: list[Run] = Field(description="newest first")
    next_before: int | None = Field(description="pass as 'before' for the next (older) page; null at the end")


class LogPiece(BaseModel):
    run_id: int
    status: str
    text: str
    offset: int = Field(description="byte offset of the log where 'text' starts")
    next_offset: int = Field(description="ask again with offset=next_offset for what follows")
    size: int = Field(description="bytes the run has written so far")
    dropped: int = Field(description="bytes dropped in the middle to keep the log bounded")
    complete: bool = Field(description="the run has ended and nothing more will come")


class RunLog(BaseModel):
    run: Run
    log: LogPiece


class TaskLogs(BaseModel):
    codops: str
    task: str
    runs: list[RunLog] = Field(description="the newest runs, oldest first, each with the end of its log")
    text: str = Field(description="every run's log one after another, each behind a marker line")
