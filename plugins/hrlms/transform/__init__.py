"""dbt: build the staging → intermediate → marts models for one run."""
