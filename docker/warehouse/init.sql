-- hrlms warehouse: schemas and least-privilege group roles.
--
-- Mounted into the warehouse container's /docker-entrypoint-initdb.d/: the postgres image runs it once,
-- with psql -v ON_ERROR_STOP=1, as the owner role (POSTGRES_USER = ${WAREHOUSE_USER:-hrlms}) in the
-- database POSTGRES_DB (warehouse), on the first start of an EMPTY data volume only. To re-run it:
-- `docker compose down -v` (drops the warehouse data) or run it by hand with psql.
--
-- Roles are NOLOGIN groups for now: the Airflow connection hrlms_warehouse still uses the owner role.
-- To use them, create LOGIN roles that are members, e.g.
--   CREATE ROLE hrlms_sync_app LOGIN PASSWORD '…' IN ROLE hrlms_sync;
-- and point a connection per task kind at them. Default privileges below are set FOR the owner role,
-- i.e. they cover tables the owner creates (today: every table, via our bootstrap and dbt). When a
-- member role creates tables itself (e.g. dbt running as a member of hrlms_transformer), add
-- ALTER DEFAULT PRIVILEGES FOR ROLE <that role> … as well.
--
-- Idempotent: safe to run again by hand.

\set ON_ERROR_STOP on

-- Nobody connects or creates objects unless granted.
REVOKE ALL ON DATABASE warehouse FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Schemas (docs/architecture.md "Warehouse schemas and who writes them"); hrlms_util (helper functions) and audit (stage timings) come from
-- plugins/hrlms/warehouse/schema.sql, which also creates them if missing.
CREATE SCHEMA IF NOT EXISTS raw_hris;
CREATE SCHEMA IF NOT EXISTS raw_lms;
CREATE SCHEMA IF NOT EXISTS dq;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS intermediate;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS sync;
CREATE SCHEMA IF NOT EXISTS hrlms_util;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS learning;   -- assignment rules as loaded from the rules file

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['hrlms_loader', 'hrlms_transformer', 'hrlms_sync', 'hrlms_bi'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

COMMENT ON ROLE hrlms_loader IS 'hrlms ingest: appends to raw_hris/raw_lms, writes the gate results to dq';
COMMENT ON ROLE hrlms_transformer IS 'hrlms dbt: reads raw_*/sync/dq, builds staging/intermediate/marts';
COMMENT ON ROLE hrlms_sync IS 'hrlms plan/apply/reconcile: reads marts, writes sync';
COMMENT ON ROLE hrlms_bi IS 'BI tools: read-only on marts';

GRANT CONNECT ON DATABASE warehouse TO hrlms_loader, hrlms_transformer, hrlms_sync, hrlms_bi;
GRANT USAGE ON SCHEMA hrlms_util, audit TO hrlms_loader, hrlms_transformer, hrlms_sync;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hrlms_util TO hrlms_loader, hrlms_transformer, hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA hrlms_util
    GRANT EXECUTE ON FUNCTIONS TO hrlms_loader, hrlms_transformer, hrlms_sync;
-- Every stage records its timing in audit.stage_runs.
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA audit TO hrlms_loader, hrlms_transformer, hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA audit
    GRANT SELECT, INSERT ON TABLES TO hrlms_loader, hrlms_transformer, hrlms_sync;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO hrlms_loader, hrlms_transformer, hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA audit
    GRANT USAGE ON SEQUENCES TO hrlms_loader, hrlms_transformer, hrlms_sync;

-- Learning rules (learning.*): replaced per rule set by the ingest task, read by dbt and the preview.
GRANT USAGE ON SCHEMA learning TO hrlms_loader, hrlms_transformer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA learning TO hrlms_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO hrlms_loader;
GRANT SELECT ON ALL TABLES IN SCHEMA learning TO hrlms_transformer;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT ON TABLES TO hrlms_transformer;

-- hrlms_loader: raw layers are append-only (INSERT; UPDATE only for snapshot metadata such as
-- row_count; no DELETE/TRUNCATE), plus the gate's results and quarantine in dq.
GRANT USAGE ON SCHEMA raw_hris, raw_lms, dq TO hrlms_loader;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA raw_hris, raw_lms, dq TO hrlms_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA raw_hris, raw_lms, dq
    GRANT SELECT, INSERT, UPDATE ON TABLES TO hrlms_loader;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA raw_hris, raw_lms, dq TO hrlms_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA raw_hris, raw_lms, dq
    GRANT USAGE, SELECT ON SEQUENCES TO hrlms_loader;

-- hrlms_transformer: dbt owns what it builds in staging/intermediate/marts (CREATE), and reads its
-- sources: raw_hris, raw_lms, dq and sync (applied state is a dbt source).
GRANT USAGE, CREATE ON SCHEMA staging, intermediate, marts TO hrlms_transformer;
GRANT SELECT ON ALL TABLES IN SCHEMA staging, intermediate, marts TO hrlms_transformer;
ALTER DEFAULT PRIVILEGES IN SCHEMA staging, intermediate, marts
    GRANT SELECT ON TABLES TO hrlms_transformer;
GRANT USAGE ON SCHEMA raw_hris, raw_lms, dq, sync TO hrlms_transformer;
GRANT SELECT ON ALL TABLES IN SCHEMA raw_hris, raw_lms, dq, sync TO hrlms_transformer;
ALTER DEFAULT PRIVILEGES IN SCHEMA raw_hris, raw_lms, dq, sync
    GRANT SELECT ON TABLES TO hrlms_transformer;

-- hrlms_sync: reads the desired state in marts, owns the rows of sync (plans, ops, applied state,
-- op log, escrow, dead letters).
GRANT USAGE ON SCHEMA marts, sync TO hrlms_sync;
GRANT SELECT ON ALL TABLES IN SCHEMA marts TO hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA marts GRANT SELECT ON TABLES TO hrlms_sync;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sync TO hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA sync GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO hrlms_sync;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA sync TO hrlms_sync;
ALTER DEFAULT PRIVILEGES IN SCHEMA sync GRANT USAGE, SELECT ON SEQUENCES TO hrlms_sync;

-- hrlms_bi: read-only on marts, the contract with BI. Nothing else.
GRANT USAGE ON SCHEMA marts TO hrlms_bi;
GRANT SELECT ON ALL TABLES IN SCHEMA marts TO hrlms_bi;
ALTER DEFAULT PRIVILEGES IN SCHEMA marts GRANT SELECT ON TABLES TO hrlms_bi;
