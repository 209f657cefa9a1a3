"""A real Spark standalone cluster (one Master, one Worker) started from the pyspark package.

Bound to 127.0.0.1 on free, non-default ports, with its work and log folders in a temp
folder; started once per test session by the ``spark_cluster`` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent


def missing_reason() -> str | None:
    if spark_home() is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed"
    return None


@dataclass
class SparkCluster:
    master_url: str
    web_url: str
    folder: Path
    processes: list[subprocess.Popen]

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=10) as response:
            return json.load(response)

    def active_app_names(self) -> list[str]:
        return [app["name"] for app in self.state().get("activeapps", [])]

    def stop(self) -> None:
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_cluster(folder: Path) -> SparkCluster:
    home = spark_home()
    assert home is not None
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=str(home),
               SPARK_WORKER_DIR=str(folder / "work"), SPARK_LOG_DIR=str(folder / "logs"),
               SPARK_NO_DAEMONIZE="1")
    port, web, worker_web = free_port(), free_port(), free_port()
    master_url, web_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web}"
    spark_class = str(home / "bin" / "spark-class")
    commands = [
        ([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
          "--webui-port", str(web)], "master.log"),
        ([spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
          "--webui-port", str(worker_web), "--cores", "2", "--memory", "2g",
          "--work-dir", str(folder / "work")], "worker.log"),
    ]
    processes = []
    cluster = SparkCluster(master_url, web_url, folder, processes)
    for argv, log_name in commands:
        log = open(folder / log_name, "wb")
        processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        if log_name == "master.log":
            _wait(lambda: cluster.state() is not None, 90, folder / log_name)
    _wait(lambda: cluster.state().get("aliveworkers", 0) >= 1, 90, folder / "worker.log")
    return cluster


def _wait(check, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Spark cluster did not come up; see {log}:\n{log.read_text()[-3000:]}")
