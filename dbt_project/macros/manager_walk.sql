{#- The reporting graph of int_managers_resolved, walked from a few people (its incremental path).

    Each worker has at most one edge up: to their chosen manager (the temporary manager while in force,
    else the primary), when that is a known worker other than them. So the walk from a person is a single
    path that ends at the top of a chain or runs into a loop — which it then goes round once, so the walk
    alone tells whether the person is on a loop, where that loop is cut (its smallest person_id) and the
    path up the cut (acyclic) graph: what the full path's reaching_top, loop_walks and cut_edges give for
    everyone, at the cost of the walk. -#}

{% macro temporary_manager_in_force(w) -%}
    {#- on the worker's local date: the run's moment in their zone (int_workers_placed.effective_time_zone) -#}
    {%- set local_date = local_date_in(w ~ '.effective_time_zone') -%}
    ({{ w }}.temporary_manager_person_id is not null
        and ({{ w }}.temporary_manager_from is null or {{ w }}.temporary_manager_from <= {{ local_date }})
        and ({{ w }}.temporary_manager_until is null or {{ local_date }} <= {{ w }}.temporary_manager_until))
{%- endmacro %}

{% macro chosen_manager(w) -%}
    case when {{ temporary_manager_in_force(w) }} then {{ w }}.temporary_manager_person_id
        else {{ w }}.manager_person_id end
{%- endmacro %}

{% macro manager_walk(starts, workers) -%}
    {#- A query: per start (`starts`: a query of person_id), the walk up the chosen-manager graph of
        `workers` (a relation with the columns of int_workers_placed, indexed on person_id):
          path      the people from the start up (the start first; on a loop, the repeated person last),
          cut_path  the path up the graph with every loop cut at its smallest person_id (ends at the top or
                    at the cut person),
          is_in_loop, loop_path, cut_person_id  (the start is on a loop: its path round it, its cut). -#}
    select
        start_id as person_id,
        path,
        case when closes then path[1:array_position(path, cut_id)] else path end as cut_path,
        closes and path[1] = path[cardinality(path)] as is_in_loop,
        case when closes and path[1] = path[cardinality(path)] then array_to_string(path, '>') end as loop_path,
        case when closes and path[1] = path[cardinality(path)] then cut_id end as cut_person_id
    from (
        select
            last_steps.*,
            case when last_steps.closes then (
                select min(member.id)
                from unnest(last_steps.path[
                    array_position(last_steps.path, last_steps.path[cardinality(last_steps.path)])
                    : cardinality(last_steps.path) - 1]) as member (id)
            ) end as cut_id
        from (
            select distinct on (walk.start_id) walk.start_id, walk.path, walk.closes
            from (
                with recursive walk (start_id, node_id, steps, path, closes) as (
                    select person_id, person_id, 0, array[person_id], false from ({{ starts }}) as starts
                    union all
                    select walk.start_id, manager.person_id, walk.steps + 1, walk.path || manager.person_id,
                        manager.person_id = any(walk.path)
                    from walk
                    inner join {{ workers }} as node on walk.node_id = node.person_id
                    inner join {{ workers }} as manager on {{ chosen_manager('node') }} = manager.person_id
                    where not walk.closes and manager.person_id <> node.person_id
                )
                select * from walk
            ) as walk
            order by walk.start_id, walk.steps desc
        ) as last_steps
    ) as walked
{%- endmacro %}
