"""Alerts reach a webhook and a mail relay (local receivers), are classified, and never carry secrets."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from hrlms.alerts import HrlmsAlertNotifier, build_event, redact, send_alert

from .receivers import SmtpSink, WebhookSink

HELD = ("stage apply failed: plan 7 is held by the breaker: 18 deactivations of 60 active accounts "
        "(limit 5% or 500). Nothing was sent to the LMS.\nrun report: /srv/reports/run_2026-01-06_x.html")


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("HRLMS_LMS_TOKEN", "lms-token-s3cr3t")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://hrlms:db-pa55word@127.0.0.1:5432/warehouse")
    monkeypatch.setenv("HRLMS_ALERT_WEBHOOK_TOKEN", "hook-t0ken")


def context(message: str) -> dict:
    return {"exception": RuntimeError(message), "run_id": "scheduled__2026-01-06",
            "dag_run": SimpleNamespace(dag_id="hrlms_provision", run_id="scheduled__2026-01-06", logical_date=None),
            "ti": SimpleNamespace(task_id="report", dag_id="hrlms_provision"), "logical_date": None}


def test_held_plan_alert_goes_to_webhook_and_email_without_secrets(secrets, monkeypatch):
    with WebhookSink() as hook, SmtpSink() as smtp:
        monkeypatch.setenv("HRLMS_ALERT_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("HRLMS_ALERT_EMAIL_TO", "hr-data@example.com, oncall@example.com")
        monkeypatch.setenv("HRLMS_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("HRLMS_SMTP_PORT", str(smtp.port))
        leaky = HELD + " (token lms-token-s3cr3t, dsn postgresql://hrlms:db-pa55word@db/warehouse)"
        HrlmsAlertNotifier().notify(context(leaky))
    (req,) = hook.requests
    assert req["auth"] == "Bearer hook-t0ken"
    event = req["body"]
    assert event["kind"] == "held" and event["plan_id"] == 7 and event["dag_id"] == "hrlms_provision"
    assert event["report"] == "/srv/reports/run_2026-01-06_x.html"
    (mail,) = smtp.messages
    assert mail["rcpt"] == ["<hr-data@example.com>", "<oncall@example.com>"]
    assert "Subject: [hrlms] held: hrlms_provision" in mail["data"] and "plan 7 is held" in mail["data"]
    for text in (str(event), mail["data"]):
        assert "lms-token-s3cr3t" not in text and "db-pa55word" not in text and "***" in text


def test_failure_and_quarantine_are_classified():
    assert build_event(context("stage gate failed: snapshot rejected"))["kind"] == "failure"
    halted = "stage apply failed: apply of plan 3 halted: 12 of 20 attempted ops failed (escrow 12, …)"
    assert build_event(context(halted))["kind"] == "quarantine"


def test_no_channel_configured_or_a_broken_channel_never_raises(monkeypatch):
    monkeypatch.delenv("HRLMS_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("HRLMS_ALERT_EMAIL_TO", raising=False)
    assert send_alert(build_event(context("x"))) == {"webhook": False, "email": False}
    monkeypatch.setenv("HRLMS_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/nothing-listens")
    assert send_alert(build_event(context("x")))["webhook"] is False


def test_redact_masks_url_passwords_and_known_secrets(secrets):
    assert redact("postgresql://u:other-pass@h/db lms-token-s3cr3t") == "postgresql://u:***@h/db ***"
