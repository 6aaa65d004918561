-- Sessions before the as-of moment, for the posterior ceiling (recsys.benchmark.posterior): who,
-- what brought the session (its first event's channel), its local start hour in the user's time
-- zone, and whether it followed a click on a logged offer of the same channel (a session started
-- within 24 hours after the send: the generator starts such sessions at the click, so their start
-- says nothing about the user's habits).
with sessions as (
    select
        e.user_id,
        e.session_id,
        min(e.event_at) as started_at,
        (array_agg(e.channel order by e.event_at))[1] as channel
    from recsys.behavior_events as e
    where e.event_at < %(as_of)s::timestamptz
    group by e.user_id, e.session_id
),

clicked as (
    select
        o.user_id,
        o.channel,
        o.sent_at
    from recsys.v_offer_log as o
    where o.clicked and o.sent_at < %(as_of)s::timestamptz
),

final as (
    select
        s.user_id,
        s.channel,
        extract(epoch from (s.started_at at time zone coalesce(u.timezone, 'UTC'))::time) / 3600.0 as local_hour,
        exists(
            select 1
            from clicked as c
            where
                c.user_id = s.user_id
                and c.channel = s.channel
                and s.started_at >= c.sent_at
                and s.started_at < c.sent_at + interval '24 hours'
        ) as is_after_click
    from sessions as s
    left join recsys.users as u on s.user_id = u.user_id
)

select * from final
