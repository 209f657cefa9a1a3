"""The Spark executor: a task is a Spark application launched with ``spark-submit``.

Client mode, so the driver is a process of ours: it runs in its own process group under
the same timeout, kill and log capture as the python executor. The organisation's
environment drives the application and, packed once per environment hash, is shipped
to the executors with ``--archives <archive>#environment``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Outcome, RunStatus
from ..trees import remove_tree
from .base import Job, LogSink
from .environments import Environment
from .process import ProcessSpec, run_process, utc_stamp
from .python import DEFAULT_MAX_RESULT_BYTES, outcome_from, read_result, run_request, with_outputs
from .run_outputs import OUTPUTS_DIR, OutputBounds
from .spark_check import SparkSubmitMissing, spark_submit_path
from .untrusted_files import read_task_file

if TYPE_CHECKING:
    from ..settings import SparkOrganisationSettings, SparkSettings
    from .environments import EnvironmentManager

DRIVER = Path(__file__).with_name("spark_driver.py")
# What spark-submit and the JVM need from the scheduler's environment; nothing secret.
SPARK_ENV = ("JAVA_HOME", "SPARK_HOME", "SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR",
             "SPARK_LOCAL_IP", "HADOOP_USER_NAME", "KRB5CCNAME")
APP_PREFIX = "peach:"


def app_name(codops: str, task: str, run_id: int) -> str:
    return f"{APP_PREFIX}{codops}:{task}:{run_id}"


def run_id_of(name: str) -> int | None:
    """The run id in an application name we gave, else None."""
    if not name.startswith(APP_PREFIX):
        return None
    tail = name.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def yarn_tags(codops: str, task: str, run_id: int) -> str:
    clean = lambda text: re.sub(r"[^a-z0-9_.-]", "-", text.lower())  # noqa: E731
    return ",".join(["peach", f"peach-codops-{clean(codops)}", f"peach-task-{clean(task)}", f"peach-run-{run_id}"])


def find_spark_submit(configured: str | None) -> str:
    """The ``spark-submit`` to run (spark_check's lookup, which validate and sync use too)."""
    try:
        return spark_submit_path(configured)
    except SparkSubmitMissing as exc:
        raise RuntimeError(str(exc)) from None


def submit_command(*, submit: str, spark: "SparkSettings", org: "SparkOrganisationSettings", codops: str,
                   task: str, run_id: int, driver_python: str, archive: str | None, request: str) -> list[str]:
    """The exact ``spark-submit`` command line of one run (pure: tested for YARN)."""
    master = spark.master
    on_yarn, on_k8s = master == "yarn" or master.startswith("yarn"), master.startswith("k8s://")
    cmd = [submit, "--master", master, "--deploy-mode", "client", "--name", app_name(codops, task, run_id)]
    if on_yarn:
        cmd += ["--queue", org.queue or codops]
    if org.num_executors and (on_yarn or on_k8s):
        cmd += ["--num-executors", str(org.num_executors)]
    if org.executor_cores:
        cmd += ["--executor-cores", str(org.executor_cores)]
    if org.executor_memory:
        cmd += ["--executor-memory", org.executor_memory]
    if org.driver_memory:
        cmd += ["--driver-memory", org.driver_memory]
    conf: dict[str, Any] = {"spark.pyspark.driver.python": driver_python, "spark.log.level": "WARN"}
    if archive:
        cmd += ["--archives", f"{archive}#environment"]
        conf["spark.pyspark.python"] = "./environment/bin/python"
    else:  # local[*]: the executors live in the driver's JVM on this machine
        conf["spark.pyspark.python"] = driver_python
    if on_yarn:
        conf["spark.yarn.tags"] = yarn_tags(codops, task, run_id)
    conf.update(spark.conf)
    conf.update(org.conf)
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={_conf_text(value)}"]
    return cmd + [str(DRIVER), request]


def _conf_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class SparkExecutor:
    """Runs a ``Job`` as a Spark application; the driver is a child process of ours."""

    def __init__(self, spark: "SparkSettings", organisations: dict[str, Any], envs: "EnvironmentManager",
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES, outputs: OutputBounds = OutputBounds()) -> None:
        from ..settings import SparkOrganisationSettings

        self.spark, self.envs, self.max_result_bytes = spark, envs, max_result_bytes
        self.outputs = outputs  # the driver's display() and figures (client mode: a process of ours)
        self.org_settings = {codops: org.spark for codops, org in organisations.items()}
        self._default_org = SparkOrganisationSettings()

    @property
    def is_local(self) -> bool:
        return self.spark.master.startswith("local")

    def run(self, job: Job, sink: LogSink, cancel: threading.Event) -> Outcome:
        note = lambda text: sink(f"{utc_stamp()} peach-tasks: {text}")  # noqa: E731
        try:
            submit = find_spark_submit(self.spark.submit)
        except RuntimeError as exc:
            note(str(exc))
            return Outcome(RunStatus.FAILURE, error=str(exc))
        # Ship exactly the environment whose interpreter drives this run (the loop chose it
        # a moment ago), not whatever is current now: driver and executors must match.
        env_path = Path(job.interpreter).parent.parent
        archive = None
        if not self.is_local:
            archive = str(self.envs.pack(Environment(job.codops, env_path.name, env_path, ())))
        work_dir = Path(tempfile.mkdtemp(prefix="peach-spark-")) if job.work_dir is None else Path(job.work_dir)
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            request_path, result_path, info_path = (work_dir / n for n in ("request.json", "result.json", "spark.json"))
            outputs_dir = work_dir / OUTPUTS_DIR
            remove_tree(outputs_dir)
            request_path.write_text(json.dumps({
                **run_request(job, result_path, outputs_dir, self.outputs, self.max_result_bytes),
                "spark_info_path": str(info_path),
            }, allow_nan=False))
            argv = submit_command(submit=submit, spark=self.spark,
                                  org=self.org_settings.get(job.codops, self._default_org), codops=job.codops,
                                  task=job.task, run_id=job.run_id, driver_python=str(job.interpreter),
                                  archive=archive, request=str(request_path))
            env_vars = dict(job.env)
            env_vars.update({k: os.environ[k] for k in SPARK_ENV if k in os.environ})
            # In a sandbox the driver also sees Spark itself, Java and the packed environment.
            spark_home = Path(os.path.realpath(submit)).parent.parent
            java = [Path(os.environ["JAVA_HOME"])] if os.environ.get("JAVA_HOME") else []
            shown = (spark_home, *java, *([Path(archive)] if archive else []))
            spec = ProcessSpec(argv=argv, env=env_vars, cwd=Path(job.cwd), timeout=job.timeout,
                               grace=job.grace, marker=job.marker, die_with_parent=job.die_with_scheduler,
                               sandbox=job.sandbox, plan=job.sandbox_plan(work_dir, read_only=shown))
            try:
                ended = run_process(spec, sink, cancel)
            except OSError as exc:
                message = f"cannot start {submit}: {exc.strerror or exc}"
                note(message)
                return Outcome(RunStatus.FAILURE, error=message)
            outcome = outcome_from(job, ended, read_result(result_path, note))
            info = _read_json(info_path)
            if info:
                outcome.details.update(spark_application_id=info.get("application_id"), spark_ui=info.get("ui"),
                                       spark_master=info.get("master"))
            return with_outputs(outcome, outputs_dir, self.outputs, note)
        finally:
            if job.work_dir is None:
                remove_tree(work_dir)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The driver's facts (application id, UI): a file the task could replace, so read as one."""
    raw = read_task_file(path, 64 * 1024)
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
