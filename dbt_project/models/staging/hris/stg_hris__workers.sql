-- Typed, cleaned worker rows of every snapshot. Parsing follows the hints the mapping stored with the
-- snapshot (date format, value maps), so a new export format needs no SQL change.
with source as (
    select * from {{ source('hris', 'workers') }}
),

hints as (
    select snapshot_id, hints from {{ source('hris', 'snapshots') }} where entity = 'workers'
),

trimmed as (
    select
        source._snapshot_id as snapshot_id,
        source._line_no as line_no,
        nullif(btrim(person_id), '') as person_id,
        nullif(btrim(employee_number), '') as employee_number,
        nullif(regexp_replace(btrim(first_name), '\s+', ' ', 'g'), '') as first_name,
        nullif(regexp_replace(btrim(last_name), '\s+', ' ', 'g'), '') as last_name,
        nullif(regexp_replace(btrim(preferred_name), '\s+', ' ', 'g'), '') as preferred_name,
        nullif(lower(btrim(work_email)), '') as work_email,
        nullif(lower(btrim(username)), '') as username,
        nullif(btrim(employment_status), '') as employment_status_raw,
        nullif(btrim(employment_type), '') as employment_type_raw,
        nullif(btrim(hire_date), '') as hire_date_raw,
        nullif(btrim(start_date), '') as start_date_raw,
        nullif(btrim(termination_date), '') as termination_date_raw,
        nullif(btrim(last_day_of_work), '') as last_day_of_work_raw,
        nullif(btrim(job_code), '') as job_code,
        nullif(btrim(job_title), '') as job_title,
        nullif(btrim(job_family), '') as job_family,
        nullif(upper(btrim(org_unit_code)), '') as org_unit_code,
        nullif(btrim(manager_person_id), '') as manager_person_id,
        -- optional: matrix managers as one ';'-separated list (blanks around separators removed),
        -- a temporary manager and the dates it applies
        nullif(btrim(regexp_replace(secondary_manager_person_ids, '\s*;\s*', ';', 'g'), '; '), '')
            as secondary_manager_person_ids,
        nullif(btrim(temporary_manager_person_id), '') as temporary_manager_person_id,
        nullif(btrim(temporary_manager_from), '') as temporary_manager_from_raw,
        nullif(btrim(temporary_manager_until), '') as temporary_manager_until_raw,
        nullif(btrim(location_code), '') as location_code,
        nullif(upper(btrim(country)), '') as country,
        nullif(btrim(time_zone), '') as time_zone,
        md5(concat_ws('|', person_id, employee_number, first_name, last_name, preferred_name, work_email,
            username, employment_status, employment_type, hire_date, start_date, termination_date,
            last_day_of_work, job_code, job_title, job_family, org_unit_code, manager_person_id,
            location_code, country, time_zone, secondary_manager_person_ids, temporary_manager_person_id,
            temporary_manager_from, temporary_manager_until)) as row_hash,
        hints.hints
    from source
    inner join hints on source._snapshot_id = hints.snapshot_id
),

typed as (
    select
        -- ids
        snapshot_id,
        line_no,
        person_id,
        employee_number,
        manager_person_id,
        secondary_manager_person_ids,
        temporary_manager_person_id,
        -- person
        first_name,
        last_name,
        preferred_name,
        work_email,
        username,
        -- employment
        lower(coalesce(hints -> 'value_maps' -> 'employment_status' ->> employment_status_raw,
            employment_status_raw)) as employment_status,
        lower(coalesce(hints -> 'value_maps' -> 'employment_type' ->> employment_type_raw,
            employment_type_raw)) as employment_type,
        -- dates (raw text kept so the gate can tell "missing" from "unparseable")
        {{ parse_date('hire_date_raw', "hints ->> 'date_format'") }} as hire_date,
        {{ parse_date('start_date_raw', "hints ->> 'date_format'") }} as start_date,
        {{ parse_date('termination_date_raw', "hints ->> 'date_format'") }} as termination_date,
        {{ parse_date('last_day_of_work_raw', "hints ->> 'date_format'") }} as last_day_of_work,
        hire_date_raw,
        start_date_raw,
        termination_date_raw,
        last_day_of_work_raw,
        {{ parse_date('temporary_manager_from_raw', "hints ->> 'date_format'") }} as temporary_manager_from,
        {{ parse_date('temporary_manager_until_raw', "hints ->> 'date_format'") }} as temporary_manager_until,
        temporary_manager_from_raw,
        temporary_manager_until_raw,
        -- job and place
        job_code,
        job_title,
        job_family,
        org_unit_code,
        location_code,
        country,
        time_zone,
        -- row identity within the snapshot: exact duplicates share a hash
        row_hash,
        row_number() over (partition by snapshot_id, person_id, row_hash order by line_no) as copy_no
    from trimmed
),

flagged as (
    select
        *,
        case
            when hire_date_raw is not null and hire_date is null then 'hire_date'
            when start_date_raw is not null and start_date is null then 'start_date'
            when termination_date_raw is not null and termination_date is null then 'termination_date'
            when last_day_of_work_raw is not null and last_day_of_work is null then 'last_day_of_work'
            when temporary_manager_from_raw is not null and temporary_manager_from is null
                then 'temporary_manager_from'
            when temporary_manager_until_raw is not null and temporary_manager_until is null
                then 'temporary_manager_until'
        end as unparseable_date_field
    from typed
)

select * from flagged
