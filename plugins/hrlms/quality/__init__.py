"""The quality gate: Great Expectations suites, checkpoint runner, quarantine, Data Docs."""
