"""hrlms_learning_rules_preview — what a rules file would do before it goes live (manual trigger).

Validates the rules file given as a param (default: the configured one), evaluates it against the
workers of the last provisioning run, and writes who each rule matches and what would change against
the live assignments as a CSV next to the run reports. Nothing reaches the LMS; the live rules are not
touched. The same as ``python -m hrlms.learning preview --rules FILE``.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="hrlms_learning_rules_preview",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["hrlms", "learning"],
    params={
        "rules_path": Param("", type="string", description="Rules file to preview (empty: HRLMS_LEARNING_RULES)."),
        "rule": Param("", type="string", description="Only this rule id (empty: all rules)."),
    },
    doc_md=__doc__,
)
def hrlms_learning_rules_preview():
    @task(multiple_outputs=True)
    def preview() -> dict:
        from pathlib import Path

        from hrlms.learning.preview import preview_rules, write_csv
        from hrlms.settings import Settings
        from hrlms.warehouse import db

        ctx = get_current_context()
        conf = ctx["dag_run"].conf or {}
        settings = Settings.from_env()
        rules_path = Path(conf.get("rules_path") or settings.learning_rules)
        with db.connect() as conn:
            db.bootstrap(conn)
            result = preview_rules(conn, rules_path, rule=conf.get("rule") or None)
        out = write_csv(result, settings.reports_dir / "previews" / f"rules_preview_{ctx['run_id']}.csv".replace(":", "_"))
        return {"file": out.name, "changes": result.counts(),
                "matches": {rid: n for rid, _req, n in result.per_rule}}

    preview()


hrlms_learning_rules_preview()
