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
    ),

    suppressed_email as (
        select s.address
        from recsys.address_suppressions as s
        where s.channel = 'email'
    ),

    suppressed_sms as (
        select s.address
        from recsys.address_suppressions as s
        where s.channel = 'sms'
    ),

    suppressed_push as (
        select s.address
        from recsys.address_suppressions as s
        where s.channel = 'push'
    )

    select
        f.user_id,
        {features},
        (coalesce(u.email_opt_in, false))::int as email_opt_in,
        (coalesce(u.sms_opt_in, false))::int as sms_opt_in,
        (coalesce(u.push_opt_in, false))::int as push_opt_in,
        -- a hard-bounced address is no way to reach the user until the address changes. Each check is
        -- a hashed subplan: one hash of the channel's suppressed addresses, probed only for the users
        -- who opted in, with no join level that every user passes through (about a fifth less time for
        -- the whole query than joins). Limit: PostgreSQL hashes the list while it fits the load's hash
        -- memory (256MB work_mem x hash_mem_multiplier 2: about 10 million addresses of one channel);
        -- past that it would scan the list for every user
        (coalesce(
            u.email_opt_in and u.email is not null
            and not coalesce(recsys.normalized_address('email', u.email) in (select * from suppressed_email), false),
            false
        ))::int as ok_email,
        (coalesce(
            u.sms_opt_in and u.phone is not null
            and not coalesce(recsys.normalized_address('sms', u.phone) in (select * from suppressed_sms), false),
            false
        ))::int as ok_sms,
        (coalesce(
            u.push_opt_in and u.push_token is not null
            and not coalesce(recsys.normalized_address('push', u.push_token) in (select * from suppressed_push), false),
            false
        ))::int as ok_push,
        (f.recency_days <= %(active_days)s)::int as active,
        (coalesce(f.user_id in (select c.user_id from conversions as c), false))::int as cooldown,
        coalesce(n.n_total, 0)::int as n_total,
        coalesce(n.n_email, 0)::int as n_email,
        coalesce(n.n_sms, 0)::int as n_sms,
        coalesce(n.n_push, 0)::int as n_push,
        -- the codes: positions in the date's sorted categories and segments (a few each)
        coalesce(array_position(%(categories)s::text[], f.top_category), 0)::int as category_code,
        coalesce(array_position(%(segments)s::text[], f.segment), 0)::int as segment_code
    from recsys.user_features as f
    left join recsys.users as u on f.user_id = u.user_id
    left join offer_counts as n on f.user_id = n.user_id
    where f.as_of = %(day)s and (%(shards)s = 1 or recsys.in_campaign_shard(f.user_id, %(shards)s, %(shard)s))
-- exempt from the linter's parser on the next line: it reads no binary format in copy options
) to stdout with (format binary)  -- noqa: PRS
