{#- marts.lms_desired_groups kept by difference. A group is desired when it is a candidate (an org unit's, a rollup's,
    a live requirement's audience) with at least one member in marts.lms_desired_group_members. An incremental build
    of the memberships rewrites only the change set's accounts' rows, and its pre-hook keeps the groups it deletes
    members of (audit.group_members_left). So a candidate the table holds (it had a member) still has one unless
    it is among those groups; every other candidate (new, left by someone, or without members) is looked up in the
    memberships by their group_key index. Before, every build hashed the group of every membership (1M workers:
    3.3M memberships, ~1 s per event run). -#}

{% macro group_members_left() -%}
    {#- lms_desired_group_members' pre-hook (before delete_changed_people): the groups of the memberships it deletes,
        or a null group_key when it writes every membership again. -#}
    insert into {{ audit_table('group_members_left') }} (change_set_id, group_key)
    {%- if is_incremental() and change_set_id() > 0 %}
    select distinct {{ change_set_id() }}, group_key from {{ this }}
    where {{ changed_people_lookup('person_id', 'person_id') }}
    {%- else %}
    values ({{ change_set_id() }}, null)
    {%- endif %}
{%- endmacro %}

{% macro lms_groups_carried() -%}
    {#- Whether lms_desired_groups may keep the groups it holds that lost no member: it exists, no build of the
        memberships since its last build rewrote them all, and the memberships are indexed by group_key (a warehouse
        whose memberships were built before that index arrives gets it at their next full build; until then every
        candidate is checked as before). Asked once when the model is rendered to run. -#}
    {%- if not execute or adapter.get_relation(database=this.database, schema=this.schema,
                                               identifier=this.identifier) is none -%}
        {{- return(false) -}}
    {%- endif -%}
    {%- set members = ref('lms_desired_group_members') -%}
    {%- set res = run_query(
        "select not exists (select from " ~ audit_table('group_members_left') ~ " where group_key is null)
           and exists (select from pg_catalog.pg_index as i
                       join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                       where i.indrelid = to_regclass('" ~ members ~ "') and a.attname = 'group_key')") -%}
    {{- return(res.columns[0].values()[0]) -}}
{%- endmacro %}

{% macro org_rollup_groups_on() -%}
    {#- var org_rollup_groups (env HRLMS_ORG_ROLLUP_GROUPS): also a 'rollup:<code>' group per unit. -#}
    {{- return(var('org_rollup_groups') in (true, 'true', 'True', 1, '1')) -}}
{%- endmacro %}
