"""One organisation's repository must never stop every organisation's sync (found by the
third hostile pass of issue 12). On PostgreSQL, a definition with a NUL character (in an
unknown key, a dependency, a magic) or a name longer than its column made the one transaction
that stores every repository's problems and tasks fail: no organisation got new commits, and
``serve`` did not start. SQLite takes both, so these run on the real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from conftest import Repo, py_task, task_yaml, write_settings

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import load_settings
from peach_tasks.store import Store
from peach_tasks.store.fit import MAX_TEXT_CHARS, fit_row
from peach_tasks.store.schema import problems

BAD_DEFINITIONS = {
    "key.yaml": 'codops: alpha\ntasks:\n  k: {executor: python, notebook: nb.ipynb, method: main, "x\\0y": 1}\n',
    "dependency.yaml": 'codops: alpha\ndependencies: ["foo\\0bar"]\ntasks:\n'
                       '  d: {executor: python, notebook: nb.ipynb, method: main}\n',
    "long-name.yaml": "codops: alpha\ntasks:\n  " + "t" * 300 + ": {executor: python, notebook: nb.ipynb, "
                      "method: main}\n",
    "long-method.yaml": "codops: alpha\ntasks:\n  m: {executor: python, notebook: nb.ipynb, method: " + "m" * 300
                        + "}\n",
    "long-codops.yaml": "codops: " + "a" * 100 + "\ntasks:\n  c: {executor: python, notebook: nb.ipynb, "
                        "method: main}\n",
    "magic.yaml": "codops: alpha\ntasks:\n  g: {executor: python, notebook: magic.ipynb, full_notebook: true}\n",
    # lone surrogates (the re-check of the hostile pass): no UTF-8 for them, in either database
    "surrogate.yaml": 'codops: alpha\ndependencies: ["six\\ud800"]\ntasks:\n'
                      '  s: {executor: python, notebook: "a\\ud800b.ipynb", method: main}\n',
}


def test_a_repository_full_of_unstorable_text_stops_no_other_organisation(tmp_path: Path, postgres_url: str) -> None:
    alpha, beta = Repo(tmp_path / "alpha"), Repo(tmp_path / "beta")
    alpha.notebook("nb.ipynb", "def main():\n    return 1\n\ndef " + "m" * 300 + "():\n    return 2\n")
    alpha.notebook("magic.ipynb", "%foomagic\0 x")
    for name, text in BAD_DEFINITIONS.items():
        alpha.write(f"peach.conf/{name}", text)
    (alpha.path / "peach.conf" / "not-utf8-\udcff.yaml").write_text("codops: [\n", errors="surrogateescape")
    alpha.commit("bad")
    beta.notebook("nb.ipynb", "def main():\n    return 'beta ran'\n")
    beta.write("peach.yaml", task_yaml("beta", {"job": py_task("nb.ipynb", "main")}))
    beta.commit("good")
    settings = load_settings(write_settings(tmp_path, [{"url": str(alpha.path)}, {"url": str(beta.path)}],
                                            database=postgres_url))
    store = Store.open(settings.database_url)
    try:
        scheduler = Scheduler(settings, store)
        scheduler.run_once(orgs=["beta"])  # raised DataError in the sync before
        [run] = store.runs("beta", "job", limit=5)
        assert (run["status"], run["result"]) == ("SUCCESS", "beta ran"), run
        found = [p["message"] for p in store.problems() if p["file"].startswith("peach.conf/")
                 or p["file"].endswith(".ipynb")]
        said = "\n".join(found)
        assert "x\ufffdy" in said and "foo\ufffdbar" in said  # stored, the NUL written as U+FFFD
        assert "at most 200" in said and "longer than 200 characters" in said and "at most 64" in said
        assert "%foomagic" in said and "'six\ufffd' is not a valid requirement" in said
        assert "not-utf8-\ufffd.yaml" in "\n".join(p["file"] for p in store.problems())
        assert not any("\0" in message for message in found)
    finally:
        store.close()


def test_fit_row_cleans_and_cuts_to_each_column() -> None:
    assert fit_row(problems, {"file": "a\ud800b\udcffc"})["file"] == "a\ufffdb\ufffdc"
    row = fit_row(problems, {"scope": "s" * 500, "message": "a\0b" + "x" * (MAX_TEXT_CHARS + 10), "line": 3,
                             "other": "a\0b"})
    assert len(row["scope"]) == 200  # String(200)
    assert row["message"].startswith("a\ufffdb") and len(row["message"]) == MAX_TEXT_CHARS
    assert row["line"] == 3 and row["other"] == "a\ufffdb"  # a value of no column: cleaned, not cut
    assert isinstance(problems.c.scope.type, sa.String)
