-- Date partitions named after their first day (behavior_events_YYYYMM, campaign_offers_YYYYMMDD):
-- retention drops the whole ones before a cutoff. One loop for both tables (10_event_partitions.sql,
-- 40_campaign.sql), so "whole partition before the cutoff" has a single definition.

create or replace function recsys.drop_partitions_before(
    p_parent regclass, p_name_date_format text, p_period interval, p_cutoff timestamptz
)
returns integer
language plpgsql
as $$
declare
    part record;
    dropped integer := 0;
begin
    for part in
        select c.oid::regclass as partition, c.relname
        from pg_inherits as i
        inner join pg_class as c on i.inhrelid = c.oid
        where i.inhparent = p_parent
    loop
        -- the partition's first day is the end of its name; it goes when its whole period (as UTC
        -- times) lies before the cutoff
        if (to_date(right(part.relname, length(p_name_date_format)), p_name_date_format) + p_period)::timestamp
            at time zone 'UTC' <= p_cutoff then
            execute format('drop table %s', part.partition);
            dropped := dropped + 1;
        end if;
    end loop;
    return dropped;
end;
$$;

comment on function recsys.drop_partitions_before(regclass, text, interval, timestamptz) is
'Retention: drops the partitions of parent whose names end in their first day (in the to_date format '
'given) and whose whole period lies before cutoff (UTC); returns how many.';
