-- Campaign scoring helpers (recsys/campaign): the shard of a user, the one definition of an offer's
-- scheduled_at (contract section 0), daily campaign_offers partitions and their retention.
-- The small SQL functions are single expressions so the planner inlines them into the bulk
-- INSERT and UPDATE that use them.

-- Its body names recsys.campaign_shard_hash (migration 015) as a constant, so it is not checked when
-- the function is created: a database migrated part of the way (the upgrade tests stop at older
-- heads, with these files) can still create it. Scoring in shards needs the table anyway.
set local check_function_bodies = off;

create or replace function recsys.in_campaign_shard(p_user_id bigint, p_shard_count integer, p_shard integer)
returns boolean
language sql
stable
parallel safe
as $$
    -- the table as a regclass constant, resolved once when the planner inlines the function (a
    -- to_regclass call here looked its name up for every row: 0.29 s against 0.06 s for 1M users)
    select
        p_shard_count = 1
        or satisfies_hash_partition('recsys.campaign_shard_hash'::regclass, p_shard_count, p_shard, p_user_id)
$$;

set local check_function_bodies = on;

comment on function recsys.in_campaign_shard(bigint, integer, integer) is
'Whether a user is in shard K (0..N-1) of a campaign run scored in N shards: PostgreSQL''s hash partitioning of '
'user_id (modulus N, remainder K), so a shard''s users are exactly one hash sub-partition of a sharded date.';

create or replace function recsys.campaign_shard(p_user_id bigint, p_shard_count integer)
returns integer
language sql
stable
parallel safe
as $$
    select min(k)::integer from generate_series(0, p_shard_count - 1) as k
    where recsys.in_campaign_shard(p_user_id, p_shard_count, k)
$$;

comment on function recsys.campaign_shard(bigint, integer) is
'Shard (0..N-1) of a user in a campaign run scored in N shards (recsys.in_campaign_shard; filters call that).';

create or replace function recsys.offer_release(
    p_campaign_date date, p_timezone text, p_send_time time, p_publish_at timestamptz
)
returns timestamptz
language sql
stable
parallel safe
as $$
    select greatest((p_campaign_date + p_send_time) at time zone p_timezone, p_publish_at)
$$;

comment on function recsys.offer_release(date, text, time, timestamptz) is
'Release time of an offer: the later of the send time in the user''s time zone on the campaign date and the publish time.';

create or replace function recsys.best_send_time(
    p_preferred_hour double precision, p_certainty double precision, p_min_certainty double precision,
    p_default time
)
returns time
language sql
immutable
parallel safe
as $$
    select
        case
            when p_preferred_hour is null or p_certainty is null or p_certainty < p_min_certainty then p_default
            else make_time(round(p_preferred_hour)::integer % 24, 0, 0)
        end
$$;

comment on function recsys.best_send_time(double precision, double precision, double precision, time) is
'Local send time of a best_hour offer: the user''s preferred_local_hour rounded to the whole hour when its preferred_hour_certainty reaches the configured minimum, else the configured default.';

-- offer_schedule returns a one-row table so that callers join it laterally: the planner then
-- inlines it as a subquery (a scalar SQL function using its argument several times would instead
-- be called row by row, ~100x slower on a million offers).
drop function if exists recsys.quiet_hours_end(timestamptz, text, time, time);
drop function if exists recsys.offer_schedule(date, text, time, timestamptz, integer, time, time);
drop function if exists recsys.offer_schedule(date, text, time, timestamptz, integer, time, time, boolean, integer);

create function recsys.offer_schedule(
    p_campaign_date date,
    p_timezone text,
    p_send_time time,
    p_publish_at timestamptz,
    p_delay_minutes integer,
    p_quiet_start time,
    p_quiet_end time,
    p_next_occurrence boolean default false,
    p_validity_hours integer default 24
)
returns table (scheduled_at timestamptz)
language sql
stable
parallel safe
as $$
    select
        case
            when p_quiet_start is null or p_quiet_start = p_quiet_end then d.due_at
            -- a window within one day, e.g. 13:00-15:00
            when p_quiet_start < p_quiet_end and d.local_due::time >= p_quiet_start and d.local_due::time < p_quiet_end
                then (d.local_due::date + p_quiet_end) at time zone p_timezone
            -- a window across midnight, e.g. 21:00-08:00: the evening part moves to the next morning
            when p_quiet_start > p_quiet_end and d.local_due::time >= p_quiet_start
                then (d.local_due::date + 1 + p_quiet_end) at time zone p_timezone
            when p_quiet_start > p_quiet_end and d.local_due::time < p_quiet_end
                then (d.local_due::date + p_quiet_end) at time zone p_timezone
            else d.due_at
        end as scheduled_at
    from (
        select
            r.due_at,
            r.due_at at time zone p_timezone as local_due
        from (
            select
                case
                    when not p_next_occurrence
                        then recsys.offer_release(p_campaign_date, p_timezone, p_send_time, p_publish_at)
                    -- best_hour: the next local send time at or after the start, if the validity
                    -- (counted from the start) reaches it; else the start
                    when n.next_at < n.start_at + make_interval(hours => p_validity_hours) then n.next_at
                    else n.start_at
                end
                + make_interval(mins => p_delay_minutes) as due_at
            from (
                select
                    s.start_at,
                    case
                        when (s.local_day + p_send_time) at time zone p_timezone >= s.start_at
                            then (s.local_day + p_send_time) at time zone p_timezone
                        else (s.local_day + 1 + p_send_time) at time zone p_timezone
                    end as next_at
                from (
                    -- the start: the campaign date's midnight in the user's zone, or the publish
                    -- moment when later
                    select
                        b.start_at,
                        (b.start_at at time zone p_timezone)::date as local_day
                    from (
                        select greatest(p_campaign_date::timestamp at time zone p_timezone, p_publish_at) as start_at
                    ) as b
                ) as s
            ) as n
        ) as r
    ) as d
$$;

comment on function recsys.offer_schedule(date, text, time, timestamptz, integer, time, time, boolean, integer) is
'scheduled_at of an offer (contract section 0): release + the timing''s delay, moved to the end of the channel''s quiet hours [start, end) local time if inside them (start > end crosses midnight). With p_next_occurrence (the best_hour timing) the release is instead the next occurrence of the local send time at or after the later of the campaign date''s local midnight and the publish moment, or that start when the next occurrence lies p_validity_hours or more after it. Used when scores are written and again when the run is published; call it in FROM (lateral).';

create or replace function recsys.html_escape(p_text text)
returns text
language sql
immutable
parallel safe
as $$
    select replace(replace(replace(replace(replace(
        p_text, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&#34;'), '''', '&#39;')
$$;

comment on function recsys.html_escape(text) is
'HTML-escapes text exactly as Jinja2 autoescaping (markupsafe) does: & < > " and single quote.';

create or replace function recsys.hash_partition_bounds(p_partition regclass)
returns table (modulus integer, remainder integer)
language sql
stable
as $$
    select b[1]::integer, b[2]::integer
    from pg_inherits as i
    inner join pg_class as c on i.inhrelid = c.oid
    cross join lateral regexp_match(pg_get_expr(c.relpartbound, c.oid), 'modulus (\d+), remainder (\d+)') as b
    where i.inhparent = p_partition
$$;

comment on function recsys.hash_partition_bounds(regclass) is
'The (modulus, remainder) of each hash sub-partition of a partition; none when it has none.';

create or replace function recsys.build_partition_indexes(p_table regclass, p_parent regclass)
returns integer
language plpgsql
as $$
declare
    idx record;
    table_name text := (select c.relname from pg_class as c where c.oid = p_table);
    parent_name text := (select c.relname from pg_class as c where c.oid = p_parent);
    constraint_name text;
    n integer := 0;
begin
    -- each index of the parent, on the standalone table with the same method, keys and predicate
    -- (pg_get_indexdef from its USING on); a unique or primary-key constraint's index backs the
    -- same kind of constraint, as ATTACH PARTITION requires to adopt it
    for idx in
        select
            i.indisunique as is_unique,
            c.conname,
            c.contype,
            substring(pg_get_indexdef(i.indexrelid) from ' USING .*$') as definition
        from pg_index as i
        left join pg_constraint as c on i.indexrelid = c.conindid and c.conrelid = p_parent and c.contype in ('p', 'u')
        where i.indrelid = p_parent
        order by i.indexrelid
    loop
        if idx.conname is null then
            execute format(
                'create %sindex on %s%s', case when idx.is_unique then 'unique ' else '' end, p_table, idx.definition
            );
        else
            -- named as the parent's, with the table's name in place of the parent's
            constraint_name := table_name || case
                when starts_with(idx.conname, parent_name) then substr(idx.conname, length(parent_name) + 1)
                else '_' || idx.conname
            end;
            execute format('create unique index %I on %s%s', constraint_name, p_table, idx.definition);
            execute format(
                'alter table %s add constraint %I %s using index %I',
                p_table, constraint_name, case idx.contype when 'p' then 'primary key' else 'unique' end, constraint_name
            );
        end if;
        n := n + 1;
    end loop;
    return n;
end;
$$;

comment on function recsys.build_partition_indexes(regclass, regclass) is
'Builds on a standalone table an index matching each index of a partitioned table (and the unique or '
'primary-key constraints they back), so that ATTACH PARTITION adopts them instead of building them; '
'returns how many. Shards build theirs side by side before attaching (docs/performance.md).';

create or replace function recsys.ensure_date_partition(p_table text, p_campaign_date date, p_shards integer)
returns boolean
language plpgsql
as $$
declare
    part_name text := p_table || '_' || to_char(p_campaign_date, 'YYYYMMDD');
begin
    if to_regclass('recsys.' || part_name) is not null then
        return false;
    end if;
    -- a date scored in shards is sub-partitioned by hash of user_id: each shard attaches its own
    execute format(
        'create table recsys.%I partition of recsys.%I for values from (%L) to (%L)%s',
        part_name, p_table, p_campaign_date, p_campaign_date + 1,
        case when p_shards > 1 then ' partition by hash (user_id)' else '' end
    );
    execute format('comment on table recsys.%I is %L', part_name, p_table || ' of ' || p_campaign_date);
    return true;
end;
$$;

comment on function recsys.ensure_date_partition(text, date, integer) is
'Creates the daily partition of campaign_offers or campaign_decisions for a campaign date if it is missing, '
'sub-partitioned by hash of user_id when the run has more than one shard; true when it was created.';

create or replace function recsys.ensure_campaign_partition(p_campaign_date date, p_shards integer default 1)
returns boolean
language sql
as $$
    select recsys.ensure_date_partition('campaign_offers', p_campaign_date, p_shards)
$$;

comment on function recsys.ensure_campaign_partition(date, integer) is
'Creates the daily campaign_offers partition of a campaign date if it is missing (recsys.ensure_date_partition).';

create or replace function recsys.ensure_decisions_partition(p_campaign_date date, p_shards integer default 1)
returns boolean
language sql
as $$
    select recsys.ensure_date_partition('campaign_decisions', p_campaign_date, p_shards)
$$;

comment on function recsys.ensure_decisions_partition(date, integer) is
'Creates the daily campaign_decisions partition of a campaign date if it is missing (recsys.ensure_date_partition).';

create or replace function recsys.complete_date_partition(p_table text, p_campaign_date date, p_shards integer)
returns integer
language plpgsql
as $$
declare
    part_name text := p_table || '_' || to_char(p_campaign_date, 'YYYYMMDD');
    part regclass := to_regclass('recsys.' || part_name);
    n integer;
    k integer;
    created integer := 0;
begin
    if part is null or not exists (
        select from pg_partitioned_table as pt where pt.partrelid = part and pt.partstrat = 'h'
    ) then
        return 0;
    end if;
    select max(b.modulus) into n from recsys.hash_partition_bounds(part) as b;
    -- a run of the same shard count attaches its shards' own tables; any other run writes through
    -- the date's sub-partitions, so each remainder gets one (empty), whoever failed to attach it
    if p_shards > 1 and (n is null or n = p_shards) then
        return 0;
    end if;
    n := coalesce(n, 1);
    for k in
        select r from generate_series(0, n - 1) as r
        except
        select b.remainder from recsys.hash_partition_bounds(part) as b
    loop
        execute format(
            'create table recsys.%I partition of %s for values with (modulus %s, remainder %s)',
            part_name || '_s' || k || 'of' || n, part, n, k
        );
        created := created + 1;
    end loop;
    return created;
end;
$$;

comment on function recsys.complete_date_partition(text, date, integer) is
'For a run that cannot attach its own hash sub-partitions (one shard, or another shard count than the date''s): '
'creates the missing (empty) hash sub-partitions of a sharded date''s partition so every row has one; returns how many.';

create or replace function recsys.drop_campaign_partitions_before(p_cutoff date)
returns integer
language plpgsql
as $$
declare
    dropped integer;
begin
    -- a daily partition goes when its campaign date is before the cutoff
    dropped := recsys.drop_partitions_before(
        'recsys.campaign_offers', 'YYYYMMDD', interval '1 day', p_cutoff::timestamp at time zone 'UTC'
    );
    delete from recsys.campaign_holdout where campaign_date < p_cutoff;
    perform recsys.drop_partitions_before(
        'recsys.campaign_decisions', 'YYYYMMDD', interval '1 day', p_cutoff::timestamp at time zone 'UTC'
    );
    return dropped;
end;
$$;

comment on function recsys.drop_campaign_partitions_before(date) is
'Retention: drops campaign_offers and campaign_decisions partitions of campaign dates before the cutoff (and their holdout rows); returns how many campaign_offers partitions.';
