"""Deliver one alert: POST to a webhook (the JSON document, or a Slack message), or e-mail.

Every delivery carries the alert's key (``Idempotency-Key`` and ``X-Peach-Alert-Id``
headers, the ``id`` field, the e-mail's Message-ID) so a receiver can drop a repeat. A
request is bounded in time (``timeout_seconds``), in size (``MAX_BODY``) and in what is
read back; redirects are not followed (the platform allowed a host, not wherever it
points). A failure says whether trying again can help (``permanent``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from ..alert_settings import Destination, SmtpSettings
from . import alert_render as render

MAX_BODY = 64 << 10  # bytes of one request body
READ_BACK = 4 << 10  # bytes of a response kept for the error message
USER_AGENT = "peach-tasks-alerts/1"


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def deliver(destination: Destination, body: dict[str, Any], *, smtp: SmtpSettings | None, timeout: float,
            environ: Mapping[str, str] | None = None) -> None:
    """Send ``body`` (an alert from ``render.payload`` with its ``id``); raise DeliveryError."""
    environ = os.environ if environ is None else environ
    if destination.type == "email":
        if smtp is None:
            raise DeliveryError("no alerts.smtp in scheduler.yaml", permanent=True)
        return send_email(smtp, destination.to, body, timeout, environ)
    url = destination.url
    if url is None and destination.url_env:
        url = environ.get(destination.url_env)
        if not url:
            raise DeliveryError(f"environment variable {destination.url_env} (the URL) is empty or unset")
    assert url is not None
    document = render.slack(body) if destination.type == "slack" else body
    secret = environ.get(destination.secret_env, "") if destination.secret_env else None
    if destination.secret_env and not secret:
        raise DeliveryError(f"environment variable {destination.secret_env} (the signing key) is empty or unset")
    post(url, document, str(body.get("id")), timeout, secret)


def post(url: str, document: dict[str, Any], key: str, timeout: float, secret: str | None = None) -> None:
    data = json.dumps(document).encode()
    if len(data) > MAX_BODY:
        raise DeliveryError(f"the alert is {len(data)} bytes, more than {MAX_BODY}", permanent=True)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Idempotency-Key": key,
               "X-Peach-Alert-Id": key}
    if secret:
        digest = hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
        headers["X-Peach-Signature"] = f"sha256={digest}"
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    shown = _shown(url)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(READ_BACK)
    except urllib.error.HTTPError as exc:
        detail = exc.read(READ_BACK).decode("utf-8", "replace").strip()[:300]
        code = exc.code
        if 300 <= code < 400:
            raise DeliveryError(f"{shown} answered {code} (a redirect, not followed); give the final URL",
                                permanent=True) from None
        # A client error will not change by itself, except these: wait and retry.
        permanent = 400 <= code < 500 and code not in (408, 409, 425, 429)
        raise DeliveryError(f"{shown} answered HTTP {code}: {detail or exc.reason}", permanent) from None
    except (urllib.error.URLError, OSError, socket.timeout) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{shown}: {reason}") from None


def _shown(url: str) -> str:
    """The URL without its path and query, which may hold a token (Slack's do)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def send_email(smtp: SmtpSettings, to: list[str], body: dict[str, Any], timeout: float,
               environ: Mapping[str, str]) -> None:
    message = render.email(body, smtp.sender, to)
    context = ssl.create_default_context(cafile=smtp.ca_file) if (smtp.ssl or smtp.starttls) else None
    try:
        if smtp.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
        with client:
            if smtp.starttls:
                client.starttls(context=context)
            if smtp.username:
                password = environ.get(smtp.password_env, "") if smtp.password_env else ""
                client.login(smtp.username, password)
            refused = client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"the mail server refused every recipient: {sorted(exc.recipients)}",
                            permanent=True) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"mail server {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}") from None
    if refused:
        raise DeliveryError(f"the mail server refused {sorted(refused)}", permanent=True)
