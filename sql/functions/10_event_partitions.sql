-- Monthly partitions of recsys.behavior_events: created on demand by the loader, dropped by retention.

create or replace function recsys.ensure_event_partitions(from_at timestamptz, to_at timestamptz)
returns integer
language plpgsql
as $$
declare
    month_start date := date_trunc('month', from_at at time zone 'UTC')::date;
    created integer := 0;
    part_name text;
begin
    while month_start <= (to_at at time zone 'UTC')::date loop
        part_name := 'behavior_events_' || to_char(month_start, 'YYYYMM');
        if to_regclass('recsys.' || part_name) is null then
            execute format(
                'create table recsys.%I partition of recsys.behavior_events '
                'for values from (%L) to (%L)',
                part_name,
                (month_start::timestamp at time zone 'UTC'),
                ((month_start + interval '1 month')::timestamp at time zone 'UTC')
            );
            created := created + 1;
        end if;
        month_start := (month_start + interval '1 month')::date;
    end loop;
    return created;
end;
$$;

comment on function recsys.ensure_event_partitions(timestamptz, timestamptz) is
'Creates the monthly behavior_events partitions covering [from_at, to_at]; returns how many were new.';

create or replace function recsys.drop_event_partitions_before(cutoff timestamptz)
returns integer
language sql
as $$
    -- a monthly partition is dropped only when its whole month lies before the cutoff
    select recsys.drop_partitions_before('recsys.behavior_events', 'YYYYMM', interval '1 month', cutoff)
$$;

comment on function recsys.drop_event_partitions_before(timestamptz) is
'Retention: drops behavior_events partitions whose whole month is before cutoff; returns how many.';
