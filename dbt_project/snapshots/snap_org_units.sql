{#
    SCD2 history of the org units (names, parents, type, status) by the run's logical date; units that
    vanish from the org snapshot are closed at that date. Config in snap_org_units.yml.
#}
{% snapshot snap_org_units %}

with org_units as (
    select * from {{ ref('int_org_units_current') }}
),

versioned as (
    select
        org_unit_code,
        org_unit_name,
        parent_org_unit_code,
        org_unit_type,
        org_unit_status,
        cast('{{ run_param("logical_date") }}' as timestamp without time zone) as as_of
    from org_units
)

select * from versioned

{% endsnapshot %}
