"""Alerts when a run fails, a plan is held by the breaker, or apply stops on mass failure (quarantine).

`HrlmsAlertNotifier` is an Airflow notifier attached as the ``report`` task's ``on_failure_callback``:
the report task runs last in every run (trigger rule all_done) and fails exactly when a stage failed,
with the stage and reason in its error — so one alert per bad run, with the run report's location.

Channels (any combination; none configured = log only):
- **Webhook**: ``HRLMS_ALERT_WEBHOOK_URL`` or the Airflow connection ``hrlms_alert_webhook`` (host = the
  URL; password = optional bearer token). POST of a JSON object: kind, dag_id, run_id, logical_date,
  task_id, plan_id, message, report. Timeout 10 s, 3 tries with backoff.
- **E-mail**: ``HRLMS_ALERT_EMAIL_TO`` (comma-separated) via SMTP from ``HRLMS_SMTP_HOST``/``_PORT``
  (+ ``HRLMS_SMTP_USER``/``_PASSWORD``, STARTTLS with ``HRLMS_SMTP_STARTTLS=true``) or the connection
  ``hrlms_alert_smtp``; sender ``HRLMS_ALERT_EMAIL_FROM`` (default hrlms@localhost).

Secrets never leave: every alert text is passed through :func:`redact`, which replaces the values of
the known secret settings (LMS token, LRS/SMTP/webhook passwords, the warehouse password) with ***.
A failing channel is logged and never fails the run a second time.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

try:  # at parse time the DAG file imports this module: keep it light, and usable without Airflow
    from airflow.sdk import BaseNotifier
except ImportError:  # pragma: no cover - the package is also used outside Airflow
    BaseNotifier = object  # type: ignore[misc,assignment]

SECRET_ENV = ("HRLMS_LMS_TOKEN", "HRLMS_LRS_PASSWORD", "HRLMS_SMTP_PASSWORD", "HRLMS_ALERT_WEBHOOK_TOKEN")


def _secrets() -> list[str]:
    values = [os.environ.get(k, "") for k in SECRET_ENV]
    for url_var in ("WAREHOUSE_URL", "AIRFLOW_CONN_HRLMS_WAREHOUSE"):
        url = os.environ.get(url_var, "")
        if "://" in url:
            pw = urlsplit(url).password
            values += [pw or "", unquote(pw or "")]
    for conn_var in ("AIRFLOW_CONN_HRLMS_LMS", "AIRFLOW_CONN_HRLMS_LRS"):
        raw = os.environ.get(conn_var, "")
        if raw.startswith("{"):
            try:
                values.append(str(json.loads(raw).get("password") or ""))
            except ValueError:
                pass
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, "***")
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def classify(message: str) -> str:
    if "is held by the breaker" in message:
        return "held"
    if "ApplyHalted" in message or re.search(r"apply of plan \d+ halted", message):
        return "quarantine"
    return "failure"


def build_event(context: dict[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    exc = context.get("exception")
    message = redact(str(exc) if exc else str(context.get("reason") or "run failed"))
    plan = re.search(r"plan (\d+) is held", message)
    report = re.search(r"run report: (\S+)", message)
    logical = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    return {
        "kind": classify(message),
        "dag_id": getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None),
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
        "logical_date": logical.isoformat() if hasattr(logical, "isoformat") else logical,
        "task_id": getattr(ti, "task_id", None),
        "plan_id": int(plan.group(1)) if plan else None,
        "report": report.group(1) if report else None,
        "message": message[:4000],
    }


def _webhook() -> tuple[str, str] | None:
    url = os.environ.get("HRLMS_ALERT_WEBHOOK_URL")
    if url:
        return url, os.environ.get("HRLMS_ALERT_WEBHOOK_TOKEN", "")
    try:
        from airflow.sdk import Connection

        conn = Connection.get("hrlms_alert_webhook")
    except Exception:   # no Airflow, or no such connection
        return None
    return (conn.host or "", conn.password or "") if conn.host else None


def send_webhook(event: dict[str, Any]) -> bool:
    target = _webhook()
    if not target:
        return False
    url, token = target
    # imported here, not at module level: every DAG file imports this module at parse time (~0.1-0.2 s)
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0.5, allowed_methods=None,
                                                     status_forcelist=(429, 500, 502, 503, 504))))
    s.mount("https://", s.get_adapter("http://"))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = s.post(url, json=event, headers=headers, timeout=10,
                  verify=os.environ.get("HRLMS_ALERT_VERIFY_TLS", "true").lower() not in ("0", "false", "no"))
    resp.raise_for_status()
    return True


def _smtp_settings() -> dict[str, Any] | None:
    host = os.environ.get("HRLMS_SMTP_HOST")
    if host:
        return {"host": host, "port": int(os.environ.get("HRLMS_SMTP_PORT", "25")),
                "user": os.environ.get("HRLMS_SMTP_USER", ""), "password": os.environ.get("HRLMS_SMTP_PASSWORD", ""),
                "starttls": os.environ.get("HRLMS_SMTP_STARTTLS", "false").lower() in ("1", "true", "yes")}
    try:
        from airflow.sdk import Connection

        conn = Connection.get("hrlms_alert_smtp")
    except Exception:
        return None
    return {"host": conn.host, "port": conn.port or 25, "user": conn.login or "", "password": conn.password or "",
            "starttls": bool((conn.extra_dejson or {}).get("starttls", False))}


def send_email(event: dict[str, Any]) -> bool:
    to = [a.strip() for a in os.environ.get("HRLMS_ALERT_EMAIL_TO", "").split(",") if a.strip()]
    smtp = _smtp_settings() if to else None
    if not to or not smtp:
        return False
    import smtplib  # here rather than at parse time, like requests above
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = f"[hrlms] {event['kind']}: {event['dag_id']} {event['logical_date']}"
    msg["From"] = os.environ.get("HRLMS_ALERT_EMAIL_FROM", "hrlms@localhost")
    msg["To"] = ", ".join(to)
    msg.set_content("\n".join(f"{k}: {v}" for k, v in event.items() if k != "message") + "\n\n" + event["message"])
    with smtplib.SMTP(smtp["host"], smtp["port"], timeout=10) as client:
        if smtp["starttls"]:
            client.starttls()
        if smtp["user"]:
            client.login(smtp["user"], smtp["password"])
        client.send_message(msg)
    return True


def send_alert(event: dict[str, Any]) -> dict[str, bool]:
    """Deliver on every configured channel; a channel that fails is logged, never raised."""
    sent = {}
    for name, channel in (("webhook", send_webhook), ("email", send_email)):
        try:
            sent[name] = channel(event)
        except Exception as exc:   # an alert must not fail the run a second time
            log.error("alert via %s failed: %s", name, redact(str(exc)))
            sent[name] = False
    log.warning("hrlms alert (%s) for %s: %s [sent: %s]", event["kind"], event["run_id"], event["message"][:500],
                ", ".join(k for k, v in sent.items() if v) or "no channel configured")
    return sent


class HrlmsAlertNotifier(BaseNotifier):
    """on_failure_callback of the DAG's report task (see module doc)."""

    def notify(self, context: dict[str, Any]) -> None:
        send_alert(build_event(context))
