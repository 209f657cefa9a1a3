"""The Spark executor against a real standalone cluster started from the pyspark package.

YARN cannot run here: for YARN these tests check the exact spark-submit command line that
is built (queue, resources, tags, archives), not a submission.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo, write_settings
from spark_cluster import spark_home

from peach_tasks.executors.spark import DRIVER, submit_command, yarn_tags
from peach_tasks.executors.spark_cluster import standalone_web_url, yarn_kill_command, yarn_list_command
from peach_tasks.model import Executor, TaskSpec
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import SparkOrganisationSettings, SparkSettings
from peach_tasks.store import Store

pytestmark = pytest.mark.spark

UDF_NOTEBOOK = """\
import sys
from pyspark.sql.functions import udf

def main():
    @udf("string")
    def where(x):
        import tabulate  # only in the organisation's environment, shipped as the archive
        return sys.executable + "|" + tabulate.__name__
    rows = spark.range(4).repartition(2).select(where("id").alias("w")).collect()
    print("executors ran", sorted({r.w for r in rows}))
    return sorted({r.w for r in rows})
"""


@pytest.fixture
def scheduler_for(tmp_path: Path, spark_cluster: Any, open_scheduler: Any) -> Any:
    def make(repo: Repo, **extra: Any) -> tuple[Scheduler, Store]:
        spark = {"master": spark_cluster.master_url, "master_web_url": spark_cluster.web_url,
                 "conf": {"spark.executor.memory": "512m", "spark.ui.enabled": "false"}}
        # Generous limits: a loaded 2-core machine can take a minute to start an application.
        timeouts = {"task": 600, "metadata": 300, "kill_grace": 2}
        return open_scheduler(write_settings(tmp_path, [{"url": str(repo.path)}], spark=spark,
                                             timeouts=timeouts, **extra))

    return make


def spark_repo(repo: Repo, notebook: str, timeout: float | None = None) -> None:
    repo.notebook("nb.ipynb", notebook)
    extra = f"    timeout: {timeout}\n" if timeout else ""
    repo.write("peach.yaml", "codops: chrts\ndependencies: [tabulate]\ntasks:\n  t:\n"
                             f"    notebook: nb.ipynb\n    method: main\n{extra}")
    repo.commit()


def test_udf_uses_the_shipped_environment(repo: Repo, scheduler_for: Any, spark_cluster: Any) -> None:
    spark_repo(repo, UDF_NOTEBOOK)
    scheduler, store = scheduler_for(repo)
    scheduler.run_once()
    run = store.runs("chrts", "t")[0]
    log = store.log(run["id"]) or ""
    assert run["status"] == "SUCCESS", log
    # Every executor ran ./environment/bin/python from the archive, inside the worker's
    # work folder, and imported a package the base interpreter does not have.
    assert run["result"], log
    for value in run["result"]:
        executable, module = value.split("|")
        assert executable.endswith("/environment/bin/python") and str(spark_cluster.folder) in executable
        assert module == "tabulate"
    assert run["details"]["spark_application_id"].startswith("app-")
    assert "executors ran" in log  # driver output is in the run's log
    archives = list((scheduler.state_dir / "envs" / "chrts" / "base").glob("*.tar.gz"))
    assert len(archives) == 1
    # A second run reuses the archive (packed once per environment hash).
    mtime = archives[0].stat().st_mtime
    scheduler.run_once()
    assert archives[0].stat().st_mtime == mtime
    assert store.runs("chrts", "t")[0]["status"] == "SUCCESS"


def test_a_py_env_task_ships_its_own_environment(repo: Repo, scheduler_for: Any, spark_cluster: Any) -> None:
    """Today's PEACH form: the UDF imports a package that only the task's `py_env` has."""
    repo.notebook("nb.ipynb", UDF_NOTEBOOK)
    repo.notebook("plain.ipynb", "def main():\n    return 1\n")
    repo.write("peach.yaml", "codops: chrts\npy_environments:\n  base:\n    dependencies: [six]\n"
                             "  ml:\n    dependencies: [tabulate]\ntasks:\n"
                             "  t: {notebook: nb.ipynb, method: main, py_env: ml}\n"
                             "  plain: {notebook: plain.ipynb, method: main, executor: python}\n")
    repo.commit()
    scheduler, store = scheduler_for(repo)
    scheduler.run_once()
    run = store.runs("chrts", "t")[0]
    log = store.log(run["id"]) or ""
    assert run["status"] == "SUCCESS", log
    assert run["result"] and all(v.split("|")[1] == "tabulate" for v in run["result"]), log
    envs = scheduler.state_dir / "envs" / "chrts"
    # The ml environment was packed for the cluster; base (no Spark task) never was.
    assert len(list((envs / "ml").glob("*.tar.gz"))) == 1 and not list((envs / "base").glob("*.tar.gz"))
    assert scheduler.envs.current("chrts") is not None
    assert "tabulate" not in " ".join(scheduler.envs.current("chrts").requirements)


def test_failing_task_has_python_traceback_and_keeps_what_its_driver_showed(repo: Repo, scheduler_for: Any) -> None:
    spark_repo(repo, "class Counted:\n    def __init__(self, n):\n        self.n = n\n"
                     "    def _repr_html_(self):\n        return f'<b>{self.n} rows</b>'\n"
                     "def main():\n    display(Counted(spark.range(3).count()))\n"
                     "    raise KeyError('missing column')\n")
    scheduler, store = scheduler_for(repo)
    scheduler.run_once()
    run = store.runs("chrts", "t")[0]
    assert run["status"] == "FAILURE" and run["error"] == "nb.ipynb cell 1 line 8: KeyError: 'missing column'"
    log = store.log(run["id"]) or ""
    assert "Traceback" in log and 'File "nb.ipynb cell 1", line 8, in main' in log
    assert [(o["kind"], o["mime_type"]) for o in store.run_outputs(run["id"])] == [("display", "text/html")]
    assert store.run_output(run["id"], 1) == ("text/html", b"<b>3 rows</b>")  # display() on the driver


def test_timeout_leaves_no_application_on_the_cluster(repo: Repo, scheduler_for: Any, spark_cluster: Any) -> None:
    spark_repo(repo, "import time\ndef main():\n"
                     "    spark.range(2).repartition(2).foreach(lambda _: time.sleep(600))\n", timeout=25)
    scheduler, store = scheduler_for(repo)
    scheduler.run_once()
    run = store.runs("chrts", "t")[0]
    assert run["status"] == "TIMEOUT"
    name = f"peach:chrts:t:{run['id']}"
    deadline = time.monotonic() + 60
    while name in spark_cluster.active_app_names() and time.monotonic() < deadline:
        time.sleep(1)
    assert name not in spark_cluster.active_app_names()


def test_orphaned_application_is_ended_at_start(repo: Repo, scheduler_for: Any, spark_cluster: Any,
                                                 tmp_path: Path) -> None:
    spark_repo(repo, "def main():\n    return 1\n")
    scheduler, store = scheduler_for(repo)
    scheduler.sync()
    spec = TaskSpec("chrts", "t", "nb.ipynb", "main", executor=Executor.SPARK)
    # A run of this same replica's previous process, which was killed (same state_dir).
    run_id = store.start_run(spec, "v", "c", scheduler.owner)
    # An application of that run, started outside our process tree (no run marker), as
    # a driver that outlived its scheduler would be.
    app = tmp_path / "orphan.py"
    app.write_text("import time\nfrom pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate()\n"
                   "time.sleep(600)\n")
    submit = str(spark_home() / "bin" / "spark-submit")  # type: ignore[operator]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEACH_TASKS_RUN")}
    orphan = subprocess.Popen([submit, "--master", spark_cluster.master_url, "--name", f"peach:chrts:t:{run_id}",
                               "--conf", f"spark.pyspark.driver.python={sys.executable}",
                               "--conf", "spark.executor.memory=512m", str(app)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        name = f"peach:chrts:t:{run_id}"
        deadline = time.monotonic() + 90
        while name not in spark_cluster.active_app_names() and time.monotonic() < deadline:
            time.sleep(1)
        assert name in spark_cluster.active_app_names()
        scheduler.recover()
        assert store.run(run_id)["status"] == "ABANDONED"  # type: ignore[index]
        deadline = time.monotonic() + 60
        while name in spark_cluster.active_app_names() and time.monotonic() < deadline:
            time.sleep(1)
        assert name not in spark_cluster.active_app_names()
    finally:
        try:
            os.killpg(orphan.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        orphan.wait()


def test_yarn_command_line_is_exact() -> None:
    """YARN cannot run here: this checks the command that would be submitted to it."""
    spark = SparkSettings(master="yarn", conf={"spark.dynamicAllocation.enabled": False})
    org = SparkOrganisationSettings(queue="chrts-q", num_executors=4, executor_cores=2, executor_memory="4g",
                                    driver_memory="2g", conf={"spark.sql.shuffle.partitions": 64})
    cmd = submit_command(submit="/opt/spark/bin/spark-submit", spark=spark, org=org, codops="chrts",
                         task="Daily.Report", run_id=42, driver_python="/state/envs/chrts/abc/bin/python",
                         archive="/state/envs/chrts/abc.tar.gz", request="/tmp/req.json")
    assert cmd == [
        "/opt/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "client",
        "--name", "peach:chrts:Daily.Report:42", "--queue", "chrts-q", "--num-executors", "4",
        "--executor-cores", "2", "--executor-memory", "4g", "--driver-memory", "2g",
        "--archives", "/state/envs/chrts/abc.tar.gz#environment",
        "--conf", "spark.pyspark.driver.python=/state/envs/chrts/abc/bin/python",
        "--conf", "spark.log.level=WARN",
        "--conf", "spark.pyspark.python=./environment/bin/python",
        "--conf", "spark.yarn.tags=peach,peach-codops-chrts,peach-task-daily.report,peach-run-42",
        "--conf", "spark.dynamicAllocation.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=64",
        str(DRIVER), "/tmp/req.json",
    ]


def test_yarn_default_queue_is_the_codops_and_orphan_commands() -> None:
    cmd = submit_command(submit="s", spark=SparkSettings(master="yarn"), org=SparkOrganisationSettings(),
                         codops="default", task="t", run_id=1, driver_python="p", archive="a.tar.gz", request="r")
    assert cmd[cmd.index("--queue") + 1] == "default"
    assert yarn_tags("sesr", "T 1", 7) == "peach,peach-codops-sesr,peach-task-t-1,peach-run-7"
    assert yarn_list_command(7)[-2:] == ["-appTags", "peach-run-7"]
    assert yarn_kill_command("application_1_2") == ["yarn", "application", "-kill", "application_1_2"]


def test_local_master_ships_no_archive_and_standalone_ui_default() -> None:
    cmd = submit_command(submit="s", spark=SparkSettings(), org=SparkOrganisationSettings(), codops="c",
                         task="t", run_id=1, driver_python="/env/bin/python", archive=None, request="r")
    assert "--archives" not in cmd and "--queue" not in cmd
    assert "spark.pyspark.python=/env/bin/python" in cmd
    assert standalone_web_url("spark://10.1.2.3:7077", None) == "http://10.1.2.3:8080"
    assert standalone_web_url("yarn", None) is None


def test_version_mismatch_is_explained(tmp_path: Path) -> None:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("spark_driver", DRIVER)
    driver = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(driver)  # type: ignore[union-attr]
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"ok": False, "error": {
        "type": "PySparkRuntimeError", "last_line": "PySparkRuntimeError: [PYTHON_VERSION_MISMATCH]",
        "traceback": "...[PYTHON_VERSION_MISMATCH] Python in worker has different version (3, 10) than "
                     "that in driver 3.11, PySpark cannot run with different minor versions."}}))
    driver._explain_version_mismatch(str(result), "3.11")
    error = json.loads(result.read_text())["error"]["last_line"]
    assert "different Python minor version than the driver (3.11)" in error
