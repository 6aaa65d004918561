-- A step of a date's feature build (recsys.data.features), one per shard of users: everything the
-- features need from each user's own events and offers, before the population's priors are known.
-- One row per user of the shard with an event in the recency cap window (has_events) or an offer sent
-- before as_of (the funnel rates' priors count those users too), in user_id order. priors.sql fits
-- the date's priors over every shard's rows, user_features.sql computes the features from them.
--
-- Parameters (psycopg2 pyformat): as_of, window_days, recency_cap_days, attribution_days (described in
-- user_features.sql), and the shard's users: user_from <= user_id < user_to (null: no bound).
-- Identifiers: {cats}, the shard's user_categories.sql rows.
--
-- Day boundaries are computed as (date)::timestamp at time zone 'UTC', so the session time zone
-- never shifts them. The event scan repeats those expressions instead of reading them from the
-- params CTE: as constants they let the planner prune the monthly behavior_events partitions.
-- Sessions are counted by aggregating in two levels (user + session, then user) instead of
-- count(distinct), which needs one sort per user.

with params as (
    select
        %(as_of)s::date as as_of,
        %(as_of)s::date::timestamp at time zone 'UTC' as as_of_at,
        (%(as_of)s::date - 7)::timestamp at time zone 'UTC' as offers_7d_start_at,
        (%(as_of)s::date - %(attribution_days)s)::timestamp at time zone 'UTC' as outcomes_known_before_at,
        %(recency_cap_days)s::double precision as recency_cap_days,
        (%(as_of)s::date - %(window_days)s)::timestamp at time zone 'UTC' as window_start_at
),

-- The shard's events in the feature window [as_of - window_days, as_of), which never reaches past the
-- recency cap; the part of the cap window before it is read only for the last event and last
-- purchase (user_history).
window_events as not materialized (
    select
        e.user_id,
        e.session_id collate "C" as session_id,  -- noqa: RF03
        e.event_at,
        e.action,
        e.product_category collate "C" as product_category,  -- noqa: RF03
        e.channel,
        e.amount,
        e.discount_used,
        e.free_shipping_used
    from recsys.behavior_events as e
    where
        e.event_at
        >= (%(as_of)s::date - least(%(window_days)s, %(recency_cap_days)s))::timestamp at time zone 'UTC'
        and e.event_at < %(as_of)s::date::timestamp at time zone 'UTC'
        and (%(user_from)s::bigint is null or e.user_id >= %(user_from)s::bigint)
        and (%(user_to)s::bigint is null or e.user_id < %(user_to)s::bigint)
),

-- First level: one row per user and session in the window. A session counts as brought by a
-- channel when one of its events names that channel (a session whose events name two messaging
-- channels counts for both).
user_sessions as (
    select
        user_id,
        session_id,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
        max(event_at) filter (where action = 'purchase') as last_purchase_at,
        count(*) filter (where action = 'view')::integer as views,
        count(*) filter (where action = 'add_to_cart')::integer as add_to_carts,
        count(*) filter (where action = 'purchase')::integer as purchases,
        count(*) filter (where action = 'purchase' and discount_used)::integer as discount_purchases,
        count(*) filter (where action = 'purchase' and free_shipping_used)::integer as free_shipping_purchases,
        sum(amount) filter (where action = 'purchase') as purchase_amount,
        -- priors: log order values ln(1 + amount), their squares
        sum(ln(1 + amount::double precision)) filter (where action = 'purchase') as log_amount,
        sum(ln(1 + amount::double precision) ^ 2) filter (where action = 'purchase') as log_amount_sq,
        bool_or(channel = 'email') as is_from_email,
        bool_or(channel = 'sms') as is_from_sms,
        bool_or(channel = 'push') as is_from_push
    from window_events
    group by user_id, session_id
),

-- The local hour each session started at, in the user's time zone (UTC without a users row); the
-- exact hour (minutes as a fraction) and whether the session is organic (no event names email, sms
-- or push: the user came by themselves, not through a message) for the priors.
sessions_local as (
    select
        s.*,
        date_part('hour', s.first_event_at at time zone coalesce(z.timezone, 'UTC')) as local_hour,
        extract(epoch from (s.first_event_at at time zone coalesce(z.timezone, 'UTC'))::time) / 3600
            as local_hour_exact,
        not coalesce(s.is_from_email or s.is_from_sms or s.is_from_push, false) as is_organic
    from user_sessions as s
    left join recsys.users as z on s.user_id = z.user_id
),

-- Second level: one row per user with a session in the window.
user_activity as (
    select
        user_id,
        max(last_event_at) as last_event_at,
        max(last_purchase_at) as last_purchase_at,
        count(*) as sessions,
        count(*) filter (where is_from_email) as email_sessions,
        count(*) filter (where is_from_sms) as sms_sessions,
        count(*) filter (where is_from_push) as push_sessions,
        count(*) filter (where local_hour >= 5 and local_hour < 11) as morning_sessions,
        count(*) filter (where local_hour >= 17 or local_hour < 5) as evening_sessions,
        sum(views) as views,
        sum(add_to_carts) as add_to_carts,
        sum(purchases) as purchases,
        sum(discount_purchases) as discount_purchases,
        sum(free_shipping_purchases) as free_shipping_purchases,
        sum(purchase_amount) as purchase_amount,
        -- priors
        sum(purchases) filter (where is_organic) as organic_purchases,
        sum(discount_purchases) filter (where is_organic) as organic_discount_purchases,
        sum(free_shipping_purchases) filter (where is_organic) as organic_free_shipping_purchases,
        sum(log_amount) as log_amount,
        sum(log_amount_sq) as log_amount_sq,
        count(*) filter (where is_organic) as organic_sessions,
        sum(cosd(15 * local_hour_exact)) filter (where is_organic) as hour_cos,
        sum(sind(15 * local_hour_exact)) filter (where is_organic) as hour_sin
    from sessions_local
    group by user_id
),

-- Last event and last purchase in the cap window before the feature window, for users who were
-- not active in the window (or did not buy there).
user_history as (
    select
        e.user_id,
        max(e.event_at) as last_event_at,
        max(e.event_at) filter (where e.action = 'purchase') as last_purchase_at
    from recsys.behavior_events as e
    where
        e.event_at >= (%(as_of)s::date - %(recency_cap_days)s)::timestamp at time zone 'UTC'
        and e.event_at
        < (%(as_of)s::date - least(%(window_days)s, %(recency_cap_days)s))::timestamp at time zone 'UTC'
        and (%(user_from)s::bigint is null or e.user_id >= %(user_from)s::bigint)
        and (%(user_to)s::bigint is null or e.user_id < %(user_to)s::bigint)
    group by e.user_id
),

-- The category with the highest score ({cats}: user_categories.sql, in user and category order); ties
-- go to the first name in byte (code point) order. Priors: per user, the views n, sum n_k^2 and
-- sum n_k pi_k over the categories, for the Dirichlet prior (priors.sql).
category_shares as (
    select
        s.user_id,
        s.product_category,
        s.category_score,
        s.category_views,
        s.share,
        max(s.category_score) over (partition by s.user_id) as top_score
    from {cats} as s
),

top_categories as (
    select
        s.user_id,
        min(s.product_category) filter (where s.category_score = s.top_score) as top_category,
        max(s.category_score)::double precision / sum(s.category_score) as category_focus,
        sum(s.category_views)::double precision as category_views,
        sum(s.category_views ^ 2)::double precision as category_views_sq,
        sum(s.category_views * s.share)::double precision as category_views_share
    from category_shares as s
    group by s.user_id
),

-- Every offer sent before as_of 00:00 UTC, logged (history) or the system's own (v_sent_offers), by
-- the date's clock: each is a contact (fatigue: offers_last_7d, days_since_last_offer), and its
-- outcome counts towards responsiveness and the funnel's rates only when its attribution window
-- (attribution_days, the window recsys.attribution_window() applies to the own offers' events:
-- set from it by the build) closed before as_of. An own offer still in its window shows the events
-- reported so far; they are not read. Nothing here depends on when the build runs.
offers as not materialized (
    select
        o.user_id,
        o.sent_at,
        o.channel,
        o.clicked,
        o.sent_at < p.outcomes_known_before_at and o.clicked is not null as is_outcome_known,
        o.sent_at >= p.offers_7d_start_at as is_last_7d,
        -- priors: the funnel of offers whose window closed (a click counts as an open; an open
        -- outcome is unknown when opened is null and there was no click)
        o.sent_at < p.outcomes_known_before_at as is_closed,
        o.offer_type,
        o.timing,
        case when o.opened or o.clicked then true when o.opened is not null then false end as opened,
        o.converted
    from recsys.v_sent_offers as o
    cross join params as p
    where
        o.sent_at < p.as_of_at
        and (%(user_from)s::bigint is null or o.user_id >= %(user_from)s::bigint)
        and (%(user_to)s::bigint is null or o.user_id < %(user_to)s::bigint)
),

contact_history as (
    select
        user_id,
        max(sent_at) as last_offer_at,
        count(*) filter (where is_last_7d) as offers_last_7d,
        count(*) filter (where is_email_known) as email_offers,
        count(*) filter (where is_email_known and clicked) as email_clicks,
        count(*) filter (where is_sms_known) as sms_offers,
        count(*) filter (where is_sms_known and clicked) as sms_clicks,
        count(*) filter (where is_push_known) as push_offers,
        count(*) filter (where is_push_known and clicked) as push_clicks,
        -- priors: trials n and successes x of each funnel rate: opens per offer and clicks per
        -- opened offer on each channel, clicks per opened offer and conversions per clicked offer
        -- of each offer type
        count(*) filter (where is_email_closed and opened is not null)::integer as email_open_n,
        count(*) filter (where is_email_closed and opened)::integer as email_open_x,
        count(*) filter (where is_email_closed and opened and clicked is not null)::integer
            as email_click_n,
        count(*) filter (where is_email_closed and opened and clicked)::integer as email_click_x,
        count(*) filter (where is_sms_closed and opened is not null)::integer as sms_open_n,
        count(*) filter (where is_sms_closed and opened)::integer as sms_open_x,
        count(*) filter (where is_sms_closed and opened and clicked is not null)::integer
            as sms_click_n,
        count(*) filter (where is_sms_closed and opened and clicked)::integer as sms_click_x,
        count(*) filter (where is_push_closed and opened is not null)::integer as push_open_n,
        count(*) filter (where is_push_closed and opened)::integer as push_open_x,
        count(*) filter (where is_push_closed and opened and clicked is not null)::integer
            as push_click_n,
        count(*) filter (where is_push_closed and opened and clicked)::integer as push_click_x,
        count(*) filter (where is_discount_closed and opened and clicked is not null)::integer
            as discount_click_n,
        count(*) filter (where is_discount_closed and opened and clicked)::integer
            as discount_click_x,
        count(*) filter (where is_discount_closed and clicked and converted is not null)::integer
            as discount_convert_n,
        count(*) filter (where is_discount_closed and clicked and converted)::integer
            as discount_convert_x,
        count(*) filter (where is_free_shipping_closed and opened and clicked is not null)::integer
            as free_shipping_click_n,
        count(*) filter (where is_free_shipping_closed and opened and clicked)::integer
            as free_shipping_click_x,
        count(*) filter (
            where is_free_shipping_closed and clicked and converted is not null
        )::integer as free_shipping_convert_n,
        count(*) filter (where is_free_shipping_closed and clicked and converted)::integer
            as free_shipping_convert_x,
        count(*) filter (where is_recommendation_closed and opened and clicked is not null)::integer
            as recommendation_click_n,
        count(*) filter (where is_recommendation_closed and opened and clicked)::integer
            as recommendation_click_x,
        count(*) filter (
            where is_recommendation_closed and clicked and converted is not null
        )::integer as recommendation_convert_n,
        count(*) filter (where is_recommendation_closed and clicked and converted)::integer
            as recommendation_convert_x,
        count(*) filter (where is_bundle_closed and opened and clicked is not null)::integer
            as bundle_click_n,
        count(*) filter (where is_bundle_closed and opened and clicked)::integer as bundle_click_x,
        count(*) filter (where is_bundle_closed and clicked and converted is not null)::integer
            as bundle_convert_n,
        count(*) filter (where is_bundle_closed and clicked and converted)::integer
            as bundle_convert_x,
        -- priors: the releases of the offers sent in the feature window as unit vectors of their
        -- local hour, summed (zone_release.sql)
        sum(cosd(15 * release_local_hour)) as release_cos,
        sum(sind(15 * release_local_hour)) as release_sin
    from (
        -- each channel and offer type compared once per offer, not once per count
        select
            user_id,
            sent_at,
            is_last_7d,
            opened,
            clicked,
            converted,
            is_outcome_known and channel = 'email' as is_email_known,
            is_outcome_known and channel = 'sms' as is_sms_known,
            is_outcome_known and channel = 'push' as is_push_known,
            is_closed and channel = 'email' as is_email_closed,
            is_closed and channel = 'sms' as is_sms_closed,
            is_closed and channel = 'push' as is_push_closed,
            is_closed and offer_type = 'discount' as is_discount_closed,
            is_closed and offer_type = 'free_shipping' as is_free_shipping_closed,
            is_closed and offer_type = 'recommendation' as is_recommendation_closed,
            is_closed and offer_type = 'bundle' as is_bundle_closed,
            -- the release (sent_at minus the timing's delay) at the user's local hour, in the window
            case
                when sent_at >= window_start_at
                    then extract(
                        epoch from (
                            (
                                sent_at - case timing
                                    when 'delay_1hour' then interval '1 hour'
                                    when 'delay_6hours' then interval '6 hours'
                                    else interval '0'
                                end
                            ) at time zone timezone
                        )::time
                    ) / 3600
            end as release_local_hour
        from (
            select
                oo.*,
                p.window_start_at,
                coalesce(z.timezone, 'UTC') as timezone
            from offers as oo
            cross join params as p
            left join recsys.users as z on oo.user_id = z.user_id
        ) as oz
    ) as o
    group by user_id
),

-- The users of the date: everyone with an event in the cap window, active in the feature window
-- or before it. The window is the later part of the cap window, so its last event, when there is
-- one, is the user's last.
users as (
    select
        coalesce(a.user_id, h.user_id) as user_id,
        coalesce(a.last_event_at, h.last_event_at) as last_event_at,
        coalesce(a.last_purchase_at, h.last_purchase_at) as last_purchase_at,
        coalesce(a.sessions, 0) as sessions,
        coalesce(a.purchase_amount, 0) as purchase_amount,
        coalesce(a.purchases, 0) as purchases,
        coalesce(a.views, 0) as views,
        coalesce(a.add_to_carts, 0) as add_to_carts,
        coalesce(a.discount_purchases, 0) as discount_purchases,
        coalesce(a.free_shipping_purchases, 0) as free_shipping_purchases,
        coalesce(a.email_sessions, 0) as email_sessions,
        coalesce(a.sms_sessions, 0) as sms_sessions,
        coalesce(a.push_sessions, 0) as push_sessions,
        coalesce(a.morning_sessions, 0) as morning_sessions,
        coalesce(a.evening_sessions, 0) as evening_sessions,
        coalesce(a.organic_purchases, 0)::integer as organic_purchases,
        coalesce(a.organic_discount_purchases, 0)::integer as organic_discount_purchases,
        coalesce(a.organic_free_shipping_purchases, 0)::integer as organic_free_shipping_purchases,
        coalesce(a.log_amount, 0) as log_amount,
        coalesce(a.log_amount_sq, 0) as log_amount_sq,
        coalesce(a.organic_sessions, 0) as organic_sessions,
        coalesce(a.hour_cos, 0) as hour_cos,
        coalesce(a.hour_sin, 0) as hour_sin
    from user_activity as a
    full outer join user_history as h on a.user_id = h.user_id
),

-- The features that need no other source.
user_window as (
    select
        u.user_id,
        -- recency_days: days since the last event of any kind, capped at the recency cap
        least(
            extract(epoch from p.as_of_at - u.last_event_at)::double precision / 86400,
            p.recency_cap_days
        ) as recency_days,
        -- days_since_last_purchase: days since the last purchase, capped at the recency cap; the
        -- cap when there was none in the cap window
        coalesce(
            least(
                extract(epoch from p.as_of_at - u.last_purchase_at)::double precision / 86400,
                p.recency_cap_days
            ),
            p.recency_cap_days
        ) as days_since_last_purchase,
        -- frequency_sessions: distinct sessions with an event in the feature window
        u.sessions::integer as frequency_sessions,
        -- monetary_value: sum of purchase amounts in the feature window, 0 without purchases
        u.purchase_amount::double precision as monetary_value,
        -- purchase_count: purchases in the feature window
        u.purchases::integer as purchase_count,
        u.views,
        u.add_to_carts,
        u.discount_purchases,
        u.free_shipping_purchases,
        u.email_sessions,
        u.sms_sessions,
        u.push_sessions,
        u.morning_sessions,
        u.evening_sessions,
        u.organic_purchases,
        u.organic_discount_purchases,
        u.organic_free_shipping_purchases,
        u.purchases - u.organic_purchases as offer_purchases,
        u.discount_purchases - u.organic_discount_purchases as offer_discount_purchases,
        u.free_shipping_purchases - u.organic_free_shipping_purchases as offer_free_shipping_purchases,
        u.log_amount,
        u.log_amount_sq,
        u.organic_sessions,
        u.hour_cos,
        u.hour_sin
    from users as u
    cross join params as p
)

-- One row per user with an event in the cap window (user_window: has_events) or an offer sent before
-- as_of (contact_history); the top category's and contact_history's columns are null for a user
-- without a categorised view or without an offer. The time zone is the users row's (UTC without one).
select
    coalesce(u.user_id, c.user_id) as user_id,
    u.user_id is not null as has_events,
    coalesce(z.timezone, 'UTC') as timezone,
    u.recency_days,
    u.days_since_last_purchase,
    u.frequency_sessions,
    u.monetary_value,
    u.purchase_count,
    u.views,
    u.add_to_carts,
    u.discount_purchases,
    u.free_shipping_purchases,
    u.email_sessions,
    u.sms_sessions,
    u.push_sessions,
    u.morning_sessions,
    u.evening_sessions,
    u.organic_purchases,
    u.organic_discount_purchases,
    u.organic_free_shipping_purchases,
    u.offer_purchases,
    u.offer_discount_purchases,
    u.offer_free_shipping_purchases,
    u.log_amount,
    u.log_amount_sq,
    u.organic_sessions,
    u.hour_cos,
    u.hour_sin,
    t.top_category,
    t.category_focus,
    t.category_views,
    t.category_views_sq,
    t.category_views_share,
    c.last_offer_at,
    c.offers_last_7d,
    c.email_offers,
    c.email_clicks,
    c.sms_offers,
    c.sms_clicks,
    c.push_offers,
    c.push_clicks,
    c.email_open_n,
    c.email_open_x,
    c.email_click_n,
    c.email_click_x,
    c.sms_open_n,
    c.sms_open_x,
    c.sms_click_n,
    c.sms_click_x,
    c.push_open_n,
    c.push_open_x,
    c.push_click_n,
    c.push_click_x,
    c.discount_click_n,
    c.discount_click_x,
    c.discount_convert_n,
    c.discount_convert_x,
    c.free_shipping_click_n,
    c.free_shipping_click_x,
    c.free_shipping_convert_n,
    c.free_shipping_convert_x,
    c.recommendation_click_n,
    c.recommendation_click_x,
    c.recommendation_convert_n,
    c.recommendation_convert_x,
    c.bundle_click_n,
    c.bundle_click_x,
    c.bundle_convert_n,
    c.bundle_convert_x,
    c.release_cos,
    c.release_sin
from user_window as u
full outer join contact_history as c on u.user_id = c.user_id
left join top_categories as t on u.user_id = t.user_id
left join recsys.users as z on coalesce(u.user_id, c.user_id) = z.user_id
order by coalesce(u.user_id, c.user_id)
