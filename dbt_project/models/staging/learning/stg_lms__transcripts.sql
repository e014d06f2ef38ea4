-- LMS transcript rows of every snapshot, typed with the mapping's hints (value maps for status, the
-- date format for completed_at when it is a date). One row per record: a record that arrives again in
-- a later export (same record_id, or the same person/requirement/status/time) is kept once, from the
-- first snapshot that brought it.
with source as (
    select * from {{ source('lms', 'transcripts') }}
),

hints as (
    select snapshot_id, hints from {{ source('hris', 'snapshots') }} where entity = 'transcripts'
),

trimmed as (
    select
        source._snapshot_id as snapshot_id,
        source._line_no as line_no,
        nullif(btrim(source.record_id), '') as record_id,
        nullif(btrim(source.person_id), '') as account_person_id,
        nullif(lower(btrim(source.work_email)), '') as learner_email,
        nullif(btrim(source.requirement_id), '') as requirement_id,
        nullif(btrim(source.status), '') as status_raw,
        nullif(btrim(source.completed_at), '') as completed_at_raw,
        nullif(btrim(source.score), '') as score_raw,
        hints.hints
    from source
    inner join hints on source._snapshot_id = hints.snapshot_id
),

typed as (
    select
        snapshot_id,
        line_no,
        record_id,
        account_person_id,
        learner_email,
        requirement_id,
        lower(coalesce(hints -> 'value_maps' -> 'status' ->> status_raw, status_raw)) as verb,
        case
            when completed_at_raw ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}'
                then hrlms_util.try_timestamptz(completed_at_raw)
            else cast(hrlms_util.try_date(completed_at_raw, hints ->> 'date_format') as timestamp) at time zone 'UTC'
        end as occurred_at,
        case when score_raw ~ '^\d{1,3}(\.\d+)?$' then
            round(case when cast(score_raw as numeric) > 1 then cast(score_raw as numeric) / 100
                else cast(score_raw as numeric) end, 4)
        end as score
    from trimmed
),

keyed as (
    select
        *,
        'transcript:' || coalesce(record_id, md5(concat_ws('|', account_person_id, learner_email,
            requirement_id, verb, occurred_at))) as event_id
    from typed
),

final as (
    select distinct on (event_id) *
    from keyed
    order by event_id, snapshot_id, line_no
)

select * from final
