-- The first day of behaviour data before the as-of moment: the posterior ceiling's window for the
-- session rate (recsys.benchmark.posterior).
with final as (
    select min(e.event_at at time zone 'UTC')::date as first_day
    from recsys.behavior_events as e
    where e.event_at < %(as_of)s::timestamptz
)

select * from final
