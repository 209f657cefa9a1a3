"""Access: bearer tokens limited to organisations, no open server beyond loopback, and no
requests a browser was tricked into (another site's writes, another host name)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest
from click.testing import CliRunner
from web_helpers import Filled, Measured, measured_store, start_server

from peach_tasks.cli import main
from peach_tasks.errors import PeachError
from peach_tasks.scheduling.triggers import TriggerQueue
from peach_tasks.settings import SettingsError, load_settings, settings_from_dict
from peach_tasks.web.server import WebServer

CHRTS_TOKEN = "chrts-token-0123456789abcdef"
ALL_TOKEN = "every-org-token-0123456789abcdef"
ALL_TOKEN_ENV = "PEACH_TEST_ALL_TOKEN"
TOKENS = [{"token": CHRTS_TOKEN, "codops": ["chrts"]}, {"token_env": ALL_TOKEN_ENV, "codops": ["*"]}]


@pytest.fixture(scope="module")
def guarded(filled: Filled) -> Iterator[WebServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ALL_TOKEN_ENV, ALL_TOKEN)
        web = start_server(filled.settings, filled.store, tokens=TOKENS)
    yield web
    web.stop()


def call(web: WebServer, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(web.url + path, headers=headers, timeout=30)


@pytest.mark.parametrize("path", ["/api/organisations", "/api/organisations/chrts/tasks", "/api/runs/1/log",
                                  "/api/problems", "/metrics"])
def test_without_a_token_data_is_refused(guarded: WebServer, path: str) -> None:
    for token in (None, "not-a-known-token-at-all"):
        response = call(guarded, path, token)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]


def test_pages_without_data_need_no_token(guarded: WebServer) -> None:
    assert call(guarded, "/api/health").json()["status"] == "ok"
    page = call(guarded, "/")
    assert page.status_code == 200 and "dashboard.js" in page.text  # it asks for the token itself


def test_one_organisations_token_never_sees_another(filled: Filled, guarded: WebServer) -> None:
    assert call(guarded, "/api/organisations", CHRTS_TOKEN).json() == [{"codops": "chrts", "tasks": 2, "running": 0}]
    assert call(guarded, "/api/organisations/chrts/tasks", CHRTS_TOKEN).status_code == 200
    secret_run = filled.store.runs("sesr", "secret", limit=1)[0]["id"]
    for path in ("/api/organisations/sesr/tasks", "/api/organisations/sesr/tasks/secret",
                 "/api/organisations/sesr/tasks/secret/runs", "/api/organisations/sesr/tasks/secret/logs",
                 f"/api/runs/{secret_run}", f"/api/runs/{secret_run}/log"):
        response = call(guarded, path, CHRTS_TOKEN)
        assert response.status_code == 403, path
        assert "sesr" in response.json()["detail"] and "secret line" not in response.text
    metrics = call(guarded, "/metrics", CHRTS_TOKEN).text
    assert 'codops="chrts"' in metrics and "sesr" not in metrics


def test_a_token_for_every_organisation_from_the_environment(filled: Filled, guarded: WebServer) -> None:
    orgs = call(guarded, "/api/organisations", ALL_TOKEN).json()
    assert [o["codops"] for o in orgs] == ["chrts", "sesr"]
    secret_run = filled.store.runs("sesr", "secret", limit=1)[0]["id"]
    assert "sesr-only secret line" in call(guarded, f"/api/runs/{secret_run}/log", ALL_TOKEN).json()["text"]


def test_a_missing_token_variable_stops_the_server_from_starting(filled: Filled,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALL_TOKEN_ENV, raising=False)
    settings = settings_from_dict({**filled.settings.model_dump(exclude={"base_dir"}), "tokens": TOKENS},
                                  filled.settings.base_dir)
    with pytest.raises(PeachError, match=f"tokens\\[1\\]: environment variable {ALL_TOKEN_ENV} is empty or unset"):
        WebServer(settings, filled.store, port=0)


def test_no_tokens_beyond_loopback_is_refused_unless_allowed(filled: Filled) -> None:
    base = filled.settings.model_dump(exclude={"base_dir"})
    for host in ("0.0.0.0", "::", "192.0.2.10", "scheduler.example"):
        with pytest.raises(PeachError, match="refusing to serve the web API on .* with no access tokens"):
            WebServer(settings_from_dict({**base, "web": {"host": host}}, filled.settings.base_dir), filled.store)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        WebServer(settings_from_dict({**base, "web": {"host": host}}, filled.settings.base_dir), filled.store)
    allowed = settings_from_dict({**base, "web": {"host": "0.0.0.0", "allow_public": True}}, filled.settings.base_dir)
    assert WebServer(allowed, filled.store).host == "0.0.0.0"
    with_tokens = settings_from_dict({**base, "web": {"host": "0.0.0.0"}, "tokens": TOKENS[:1]},
                                     filled.settings.base_dir)
    assert WebServer(with_tokens, filled.store).host == "0.0.0.0"


def test_web_command_refuses_a_public_address_with_a_clear_message(filled: Filled) -> None:
    config = Path(filled.settings.base_dir) / "scheduler.yaml"
    result = CliRunner().invoke(main, ["--config", str(config), "web", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve the web API on 0.0.0.0" in result.output and "allow_public" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_token_settings_are_checked_with_their_line(tmp_path: Path) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text("tokens:\n"
                      "  - codops: [chrts]\n"
                      "  - token: short\n"
                      "    codops: [chrts]\n"
                      "  - token: a-long-enough-token-value\n"
                      "    token_env: SOME_VARIABLE\n"
                      "    codops: [chrts]\n"
                      "  - token: another-long-enough-token\n"
                      "    codops: []\n"
                      "web: {host: 0.0.0.0, allow_public: yes, colour: red}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "scheduler.yaml:2: 'tokens[0]'" in text and "give 'token' or 'token_env'" in text
    assert "scheduler.yaml:3: 'tokens[1].token'" in text and "16 characters" in text
    assert "scheduler.yaml:6: 'tokens[2].token_env'" in text and "not both" in text
    assert "a-long-enough-token-value" not in text  # a token is never echoed back
    assert "scheduler.yaml:9: 'tokens[3].codops'" in text
    assert "scheduler.yaml:10: unknown key 'web.colour'" in text


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measured]:
    """A store of its own with one active task, default/heavy, to queue triggers into."""
    own = measured_store(tmp_path_factory.mktemp("guarded-writes"))
    yield own
    own.store.close()


def trigger(web: WebServer, content_type: str | None = "application/json", body: bytes = b"{}",
            **headers: str) -> httpx.Response:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return httpx.post(web.url + "/api/organisations/default/tasks/heavy/trigger", content=body, headers=sent,
                      timeout=30)


def test_a_page_of_another_site_cannot_trigger_a_run(heavy: Measured) -> None:
    """Issue 11: with no tokens on loopback, a form POST from any web page queued a run."""
    web = start_server(heavy.settings, heavy.store)
    try:
        before = len(TriggerQueue(heavy.store).pending())
        evil = "http://evil.example"
        form = trigger(web, "application/x-www-form-urlencoded", b"", Origin=evil)  # what a <form> sends
        assert form.status_code == 403 and evil in form.json()["detail"], form.text
        assert trigger(web, "application/json", Origin=evil).status_code == 403
        assert trigger(web, "application/json", Origin="null").status_code == 403  # a sandboxed frame, a file
        assert trigger(web, "application/json", Sec_Fetch_Site="cross-site").status_code == 403
        assert trigger(web, "application/json", Origin=f"{web.url}.evil.example").status_code == 403
        for content_type, body in (("application/x-www-form-urlencoded", b""), ("text/plain", b'{"payload": 1}'),
                                   ("multipart/form-data; boundary=x", b"--x--\r\n"), (None, b"")):
            refused = trigger(web, content_type, body)
            assert refused.status_code == 415, (content_type, refused.text)
            assert "Content-Type: application/json" in refused.json()["detail"]
        assert TriggerQueue(heavy.store).pending()[before:] == []
        # The server's own pages (Swagger UI's "Try it out"), and clients that send no Origin, still write.
        first = trigger(web, "application/json; charset=utf-8", Origin=web.url)
        assert first.status_code == 201
        assert trigger(web, "application/json", b'{"payload": {"n": 1}}').status_code == 201
        again = trigger(web, "application/json", b"")  # no body: no payload, as the first asked
        assert again.status_code == 201 and again.json()["id"] == first.json()["id"]  # waiting: the same one
        assert len(TriggerQueue(heavy.store).pending()) == before + 2
        # Reads are not writes: another site's page cannot read the answer anyway (no CORS).
        assert httpx.get(web.url + "/api/organisations", headers={"Origin": evil}).status_code == 200
    finally:
        web.stop()


def test_only_this_servers_host_names_are_answered(heavy: Measured) -> None:
    """Issue 11: any Host was served, so a DNS-rebinding page could read and write through the browser."""
    web = start_server(heavy.settings, heavy.store)
    try:
        for path in ("/", "/api/health", "/api/organisations", "/metrics"):
            wrong = httpx.get(web.url + path, headers={"Host": "evil.example"}, timeout=30)
            assert wrong.status_code == 400, path
            assert "'evil.example'" in wrong.json()["detail"] and "web.allowed_hosts" in wrong.json()["detail"]
        assert trigger(web, Host=f"evil.example:{web.port}").status_code == 400
        for host in (f"127.0.0.1:{web.port}", "localhost", "LOCALHOST:1234", "[::1]:8765", "127.0.0.1"):
            assert httpx.get(web.url + "/api/health", headers={"Host": host}).status_code == 200, host
        for host in ("", "evil.example:x", "[::1", "127.0.0.1:8765:1", "a b"):
            assert httpx.get(web.url + "/api/health", headers={"Host": host}).status_code == 400, host
    finally:
        web.stop()
    named = start_server(heavy.settings, heavy.store, web={"allowed_hosts": ["Tasks.Example"],
                                                           "allowed_origins": ["https://lab.example"]})
    try:
        assert httpx.get(named.url + "/api/health", headers={"Host": "tasks.example:8443"}).status_code == 200
        assert httpx.get(named.url + "/api/health", headers={"Host": "localhost"}).status_code == 200
        assert httpx.get(named.url + "/api/health", headers={"Host": "evil.example"}).status_code == 400
        assert trigger(named, Origin="https://lab.example").status_code == 201  # a configured origin
        assert trigger(named, Origin="http://lab.example").status_code == 403
    finally:
        named.stop()
    anyone = start_server(heavy.settings, heavy.store, web={"allowed_hosts": ["*"]})
    try:
        assert httpx.get(anyone.url + "/api/health", headers={"Host": "evil.example"}).status_code == 200
    finally:
        anyone.stop()


def test_host_and_origin_settings_are_checked_with_their_line(tmp_path: Path) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text("web:\n"
                      "  allowed_hosts: [tasks.example, 'http://tasks.example/', 'tasks.example:8443']\n"
                      "  allowed_origins: [tasks.example, 'https://lab.example/path', '*']\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "scheduler.yaml:2: 'web.allowed_hosts[1]'" in text and "host name" in text
    assert "'web.allowed_hosts[2]'" in text and "without a port" in text
    assert "scheduler.yaml:3: 'web.allowed_origins[0]'" in text and "scheme://host" in text
    assert "'web.allowed_origins[1]'" in text and "'web.allowed_origins[2]'" in text
    fine = settings_from_dict({"web": {"allowed_hosts": ["Tasks.Example.", "::1", "[fd00::1]", "*"],
                                       "allowed_origins": ["HTTPS://Lab.Example:443/"]}}, tmp_path)
    assert fine.web.allowed_hosts == ["tasks.example", "::1", "fd00::1", "*"]
    assert fine.web.allowed_origins == ["https://lab.example"]
