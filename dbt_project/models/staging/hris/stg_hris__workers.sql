-- Typed, cleaned worker rows of every snapshot (the parse: macros/hris_workers.sql).
{{ hris_worker_parse() }}
