-- every user with features as of the day (in the shard), with the eligibility inputs, as COPY BINARY
-- of fixed-width non-null fields. features: the policy's feature columns as real, composed in Python.
copy (
    with recent_offers as (
        select
            o.user_id,
            o.channel
        from recsys.campaign_offers as o
        where
            o.campaign_date >= %(cap_from)s::date and o.campaign_date < %(day)s::date
            and o.status in ('scheduled', 'claimed', 'sent')
        union all
        select
            h.user_id,
            h.channel
        from recsys.offer_history as h
        where h.sent_at >= %(cap_from)s::date::timestamptz and h.sent_at < %(day)s::date::timestamptz
    ),

    offer_counts as (
        select
            user_id,
            count(*) as n_total,
            count(*) filter (where channel = 'email') as n_email,
            count(*) filter (where channel = 'sms') as n_sms,
            count(*) filter (where channel = 'push') as n_push
        from recent_offers
        group by user_id
    ),

    conversions as (
        select e.user_id
        from recsys.behavior_events as e
        where
            e.action = 'purchase'
            and e.event_at >= %(cool_from)s::date::timestamptz and e.event_at < %(day)s::date::timestamptz
        union
        select o.user_id
        from recsys.offer_events as v
        inner join recsys.campaign_offers as o on v.offer_id = o.offer_id
        where
            v.event = 'converted'
            and v.event_at >= %(cool_from)s::date::timestamptz and v.event_at < %(day)s::date::timestamptz
        union
        select h.user_id
        from recsys.offer_history as h
        where h.converted and h.sent_at >= %(cool_from)s::date::timestamptz and h.sent_at < %(day)s::date::timestamptz
    )

    select
        f.user_id,
        {features},
        (coalesce(u.email_opt_in, false))::int as email_opt_in,
        (coalesce(u.sms_opt_in, false))::int as sms_opt_in,
        (coalesce(u.push_opt_in, false))::int as push_opt_in,
        (coalesce(u.email_opt_in and u.email is not null and se.address is null, false))::int as ok_email,
        (coalesce(u.sms_opt_in and u.phone is not null and ss.address is null, false))::int as ok_sms,
        (coalesce(u.push_opt_in and u.push_token is not null and sp.address is null, false))::int as ok_push,
        (f.recency_days <= %(active_days)s)::int as active,
        (c.user_id is not null)::int as cooldown,
        coalesce(n.n_total, 0)::int as n_total,
        coalesce(n.n_email, 0)::int as n_email,
        coalesce(n.n_sms, 0)::int as n_sms,
        coalesce(n.n_push, 0)::int as n_push,
        coalesce(k.code, 0)::int as category_code,
        coalesce(g.code, 0)::int as segment_code
    from recsys.user_features as f
    left join unnest(%(categories)s::text[]) with ordinality as k (top_category, code)
        on f.top_category = k.top_category
    left join unnest(%(segments)s::text[]) with ordinality as g (segment, code) on f.segment = g.segment
    left join recsys.users as u on f.user_id = u.user_id
    -- a hard-bounced address is no way to reach the user until the address changes
    left join recsys.address_suppressions as se
        on se.channel = 'email' and se.address = recsys.normalized_address('email', u.email)
    left join recsys.address_suppressions as ss
        on ss.channel = 'sms' and ss.address = recsys.normalized_address('sms', u.phone)
    left join recsys.address_suppressions as sp
        on sp.channel = 'push' and sp.address = recsys.normalized_address('push', u.push_token)
    left join offer_counts as n on f.user_id = n.user_id
    left join (select distinct user_id from conversions) as c on f.user_id = c.user_id
    where f.as_of = %(day)s and (%(shards)s = 1 or recsys.in_campaign_shard(f.user_id, %(shards)s, %(shard)s))
-- exempt from the linter's parser on the next line: it reads no binary format in copy options
) to stdout with (format binary)  -- noqa: PRS
