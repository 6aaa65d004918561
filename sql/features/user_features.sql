-- User features as of a date: one row per user with at least one event in the recency cap window
-- before as_of 00:00 UTC, with exactly the columns of recsys.user_features. Run by
-- recsys.features.build_features, which inserts the rows into a new partition.
--
-- Parameters (psycopg2 pyformat):
--   as_of             the date; only events and offers strictly before as_of 00:00 UTC are read
--   window_days       feature window for frequency, monetary, engagement, preferences, category
--   recency_cap_days  cap of the recency-type features, also the lower bound of the event scan
--   attribution_days  offers count towards responsiveness once their outcome window has closed
--   prior_strength_min, prior_strength_max
--                     bounds of the empirical-Bayes prior strengths, in pseudo-observations
--                     (recsys.eb_prior_strength)
--
-- The prior-shrunk features (migration 013, the "priors" section of each CTE below) are
-- posterior means under population priors fitted to the users of the date (empirical Bayes: the
-- method of moments of recsys.eb_prior_strength, or the normal-normal one for the order value).
-- Their inputs are the same point-in-time data as the others: events before as_of, and offers'
-- outcomes only when the offer was sent at least attribution_days before as_of.
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

-- Each event is read once for the sessions and counts and once for the categories. The feature
-- window [as_of - window_days, as_of) never reaches past the recency cap; the part of the cap window
-- before it is read only for the last event and last purchase (user_history). Collation "C"
-- compares bytes: the same groups as any deterministic collation, sorted faster, and category ties
-- go by code point whatever the database locale.
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
    group by e.user_id
),

-- Interest per category in the window: views + 3 add_to_carts + 5 purchases; events without a
-- category are ignored.
category_scores as (
    select
        user_id,
        product_category,
        sum(
            case action
                when 'view' then 1
                when 'add_to_cart' then 3
                when 'purchase' then 5
            end
        ) as category_score,
        count(*) filter (where action = 'view') as category_views
    from window_events
    where product_category is not null
    group by user_id, product_category
),

-- Priors: each category's share pi_k of the date's categorised views (all users).
category_population as (
    select
        product_category,
        sum(category_views)::double precision / nullif(sum(sum(category_views)) over (), 0) as share
    from category_scores
    group by product_category
),

-- Each user's categories with the population share pi_k (0 for a category nobody viewed) and the
-- user's highest score.
category_shares as (
    select
        s.user_id,
        s.product_category,
        s.category_score,
        s.category_views,
        coalesce(c.share, 0) as share,
        max(s.category_score) over (partition by s.user_id) as top_score
    from category_scores as s
    left join category_population as c on s.product_category = c.product_category
),

-- The category with the highest score; ties go to the first name in byte (code point) order.
-- Priors: per user, the views n, sum n_k^2 and sum n_k pi_k over the categories, for the
-- Dirichlet prior (category_prior).
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

-- Priors: the Dirichlet concentration kappa of the category interest (method of moments over the
-- users with a categorised view), and the population's largest share and sum pi^2.
category_prior as materialized (
    select
        recsys.eb_prior_strength(
            avg(
                t.category_views_sq / t.category_views ^ 2
                - 2 * t.category_views_share / t.category_views
                + p.share_sq
            ) / nullif(1 - max(p.share_sq), 0),
            avg(1.0 / t.category_views),
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as strength,
        max(p.share_max) as share_max
    from top_categories as t
    cross join (
        select
            coalesce(sum(share ^ 2), 0) as share_sq,
            coalesce(max(share), 0) as share_max
        from category_population
    ) as p
    where t.category_views > 0
),

-- Priors: per user, the largest numerator max_k (n_k + kappa pi_k) of the category posterior
-- means, once kappa is known: a second pass over the user x category rows.
category_posterior as (
    select
        s.user_id,
        max(s.category_views::double precision + (select cp.strength from category_prior as cp) * s.share)
            as top_posterior
    from category_shares as s
    group by s.user_id
),

-- Every offer sent before as_of 00:00 UTC: the logged ones (history, and the system's own once
-- their attribution window closed, v_offer_log) and the system's own sent offers still in their
-- window. Those are contacts already (fatigue: offers_last_7d, days_since_last_offer) but their
-- outcome is not final, so they never count towards responsiveness. The second branch is the
-- complement of v_offer_log's own offers (same now(), same window: recsys.attribution_window(), set
-- from attribution_days by the build); its campaign_date bound prunes partitions and reaches back 8
-- days or the window plus 2, whichever is longer (an offer is sent within a day or so of its
-- campaign date; one sent later than that after it is missed).
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
    from recsys.v_offer_log as o
    cross join params as p
    where o.sent_at < p.as_of_at
    union all
    select
        c.user_id,
        c.sent_at,
        c.channel,
        null::boolean as clicked,
        false as is_outcome_known,
        c.sent_at >= p.offers_7d_start_at as is_last_7d,
        false as is_closed,
        c.offer_type,
        c.timing,
        null::boolean as opened,
        null::boolean as converted
    from recsys.campaign_offers as c
    cross join params as p
    where
        c.campaign_date >= %(as_of)s::date - greatest(8, %(attribution_days)s + 2)
        and c.campaign_date <= %(as_of)s::date
        and c.status = 'sent'
        and c.sent_at < p.as_of_at
        and c.sent_at + recsys.attribution_window() > now()
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
            as bundle_convert_x
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
            is_closed and offer_type = 'bundle' as is_bundle_closed
        from offers
    ) as o
    group by user_id
),

-- Priors: the local hour of each time zone's release in the feature window, from the offers sent
-- to its users there (release = sent_at minus the timing's delay), as a sum of unit vectors.
offer_releases as (
    select
        coalesce(z.timezone, 'UTC') as timezone,
        extract(
            epoch from (
                (
                    o.sent_at - case o.timing
                        when 'delay_1hour' then interval '1 hour'
                        when 'delay_6hours' then interval '6 hours'
                        else interval '0'
                    end
                ) at time zone coalesce(z.timezone, 'UTC')
            )::time
        ) / 3600 as local_hour
    from offers as o
    cross join params as p
    left join recsys.users as z on o.user_id = z.user_id
    where o.sent_at >= p.window_start_at
),

zone_release as (
    select
        timezone,
        sum(cosd(15 * local_hour)) as hour_cos,
        sum(sind(15 * local_hour)) as hour_sin
    from offer_releases
    group by timezone
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
),

-- RFM quintiles by ntile(5) over the users of the date; equal values are split by user_id so the
-- scores are reproducible. Only the keys go through the three sorts; the scores join back.
-- r_score: 5 = most recent (smallest recency_days).
-- f_score: 5 = most sessions in the window.
-- m_score: quintile among the users who spent something in the window (5 = highest spend); users
-- with no spend get 1.
rfm_scores as (
    select
        user_id,
        ntile(5) over (order by recency_days desc, user_id asc)::smallint as r_score,
        ntile(5) over (order by frequency_sessions asc, user_id asc)::smallint as f_score,
        case
            when monetary_value > 0
                then ntile(5) over (
                    partition by monetary_value > 0
                    order by monetary_value asc, user_id asc
                )
            else 1
        end::smallint as m_score
    from user_window
),

-- Priors: the moments of each Beta-Binomial rate over the users with at least one trial (n > 0):
-- the mean m of their rates x / n, the variance of the rates around it, and the mean of 1 / n.
-- The funnel rates come from contact_history (a user without offers has no trial), the purchase
-- shares from user_window. Those split the window's purchases into organic ones (in a session no
-- event of which names email, sms or push) and offer-driven ones (the rest: in a session a message
-- brought, which is how an offer click shows in the events; a newsletter visit counts there too,
-- the events cannot tell them apart).
offer_rate_moments as (
    select
        avg(email_open_x::double precision / nullif(email_open_n, 0)) as email_open_mean,
        var_pop(email_open_x::double precision / nullif(email_open_n, 0)) as email_open_var,
        avg(1.0 / nullif(email_open_n, 0)) as email_open_inv,
        avg(sms_open_x::double precision / nullif(sms_open_n, 0)) as sms_open_mean,
        var_pop(sms_open_x::double precision / nullif(sms_open_n, 0)) as sms_open_var,
        avg(1.0 / nullif(sms_open_n, 0)) as sms_open_inv,
        avg(push_open_x::double precision / nullif(push_open_n, 0)) as push_open_mean,
        var_pop(push_open_x::double precision / nullif(push_open_n, 0)) as push_open_var,
        avg(1.0 / nullif(push_open_n, 0)) as push_open_inv,
        avg(email_click_x::double precision / nullif(email_click_n, 0)) as email_click_mean,
        var_pop(email_click_x::double precision / nullif(email_click_n, 0)) as email_click_var,
        avg(1.0 / nullif(email_click_n, 0)) as email_click_inv,
        avg(sms_click_x::double precision / nullif(sms_click_n, 0)) as sms_click_mean,
        var_pop(sms_click_x::double precision / nullif(sms_click_n, 0)) as sms_click_var,
        avg(1.0 / nullif(sms_click_n, 0)) as sms_click_inv,
        avg(push_click_x::double precision / nullif(push_click_n, 0)) as push_click_mean,
        var_pop(push_click_x::double precision / nullif(push_click_n, 0)) as push_click_var,
        avg(1.0 / nullif(push_click_n, 0)) as push_click_inv,
        avg(discount_click_x::double precision / nullif(discount_click_n, 0)) as discount_click_mean,
        var_pop(discount_click_x::double precision / nullif(discount_click_n, 0)) as discount_click_var,
        avg(1.0 / nullif(discount_click_n, 0)) as discount_click_inv,
        avg(free_shipping_click_x::double precision / nullif(free_shipping_click_n, 0)) as free_shipping_click_mean,
        var_pop(free_shipping_click_x::double precision / nullif(free_shipping_click_n, 0)) as free_shipping_click_var,
        avg(1.0 / nullif(free_shipping_click_n, 0)) as free_shipping_click_inv,
        avg(recommendation_click_x::double precision / nullif(recommendation_click_n, 0)) as recommendation_click_mean,
        var_pop(recommendation_click_x::double precision / nullif(recommendation_click_n, 0))
            as recommendation_click_var,
        avg(1.0 / nullif(recommendation_click_n, 0)) as recommendation_click_inv,
        avg(bundle_click_x::double precision / nullif(bundle_click_n, 0)) as bundle_click_mean,
        var_pop(bundle_click_x::double precision / nullif(bundle_click_n, 0)) as bundle_click_var,
        avg(1.0 / nullif(bundle_click_n, 0)) as bundle_click_inv,
        avg(discount_convert_x::double precision / nullif(discount_convert_n, 0)) as discount_convert_mean,
        var_pop(discount_convert_x::double precision / nullif(discount_convert_n, 0)) as discount_convert_var,
        avg(1.0 / nullif(discount_convert_n, 0)) as discount_convert_inv,
        avg(free_shipping_convert_x::double precision / nullif(free_shipping_convert_n, 0))
            as free_shipping_convert_mean,
        var_pop(free_shipping_convert_x::double precision / nullif(free_shipping_convert_n, 0))
            as free_shipping_convert_var,
        avg(1.0 / nullif(free_shipping_convert_n, 0)) as free_shipping_convert_inv,
        avg(recommendation_convert_x::double precision / nullif(recommendation_convert_n, 0))
            as recommendation_convert_mean,
        var_pop(recommendation_convert_x::double precision / nullif(recommendation_convert_n, 0))
            as recommendation_convert_var,
        avg(1.0 / nullif(recommendation_convert_n, 0)) as recommendation_convert_inv,
        avg(bundle_convert_x::double precision / nullif(bundle_convert_n, 0)) as bundle_convert_mean,
        var_pop(bundle_convert_x::double precision / nullif(bundle_convert_n, 0)) as bundle_convert_var,
        avg(1.0 / nullif(bundle_convert_n, 0)) as bundle_convert_inv
    from contact_history
),

purchase_rate_moments as (
    select
        avg(organic_discount_purchases::double precision / nullif(organic_purchases, 0)) as organic_discount_mean,
        var_pop(organic_discount_purchases::double precision / nullif(organic_purchases, 0)) as organic_discount_var,
        avg(1.0 / nullif(organic_purchases, 0)) as organic_discount_inv,
        avg(offer_discount_purchases::double precision / nullif(offer_purchases, 0)) as offer_discount_mean,
        var_pop(offer_discount_purchases::double precision / nullif(offer_purchases, 0)) as offer_discount_var,
        avg(1.0 / nullif(offer_purchases, 0)) as offer_discount_inv,
        avg(organic_free_shipping_purchases::double precision / nullif(organic_purchases, 0))
            as organic_free_shipping_mean,
        var_pop(organic_free_shipping_purchases::double precision / nullif(organic_purchases, 0))
            as organic_free_shipping_var,
        avg(1.0 / nullif(organic_purchases, 0)) as organic_free_shipping_inv,
        avg(offer_free_shipping_purchases::double precision / nullif(offer_purchases, 0)) as offer_free_shipping_mean,
        var_pop(offer_free_shipping_purchases::double precision / nullif(offer_purchases, 0))
            as offer_free_shipping_var,
        avg(1.0 / nullif(offer_purchases, 0)) as offer_free_shipping_inv
    from user_window
),

rate_moments as (
    select *
    from offer_rate_moments
    cross join purchase_rate_moments
),

-- Priors: each rate's Beta(kappa m, kappa (1 - m)) population prior, as its mean m (0.5 when no
-- user had a trial) and strength kappa = recsys.eb_prior_strength(var / (m (1 - m)), mean 1 / n).
-- The user's posterior mean is (x + kappa m) / (n + kappa).
rate_priors as (
    select
        coalesce(email_open_mean, 0.5) as email_open_mean,
        recsys.eb_prior_strength(
            email_open_var / nullif(email_open_mean * (1 - email_open_mean), 0),
            email_open_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as email_open_strength,
        coalesce(sms_open_mean, 0.5) as sms_open_mean,
        recsys.eb_prior_strength(
            sms_open_var / nullif(sms_open_mean * (1 - sms_open_mean), 0),
            sms_open_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as sms_open_strength,
        coalesce(push_open_mean, 0.5) as push_open_mean,
        recsys.eb_prior_strength(
            push_open_var / nullif(push_open_mean * (1 - push_open_mean), 0),
            push_open_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as push_open_strength,
        coalesce(email_click_mean, 0.5) as email_click_mean,
        recsys.eb_prior_strength(
            email_click_var / nullif(email_click_mean * (1 - email_click_mean), 0),
            email_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as email_click_strength,
        coalesce(sms_click_mean, 0.5) as sms_click_mean,
        recsys.eb_prior_strength(
            sms_click_var / nullif(sms_click_mean * (1 - sms_click_mean), 0),
            sms_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as sms_click_strength,
        coalesce(push_click_mean, 0.5) as push_click_mean,
        recsys.eb_prior_strength(
            push_click_var / nullif(push_click_mean * (1 - push_click_mean), 0),
            push_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as push_click_strength,
        coalesce(discount_click_mean, 0.5) as discount_click_mean,
        recsys.eb_prior_strength(
            discount_click_var / nullif(discount_click_mean * (1 - discount_click_mean), 0),
            discount_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as discount_click_strength,
        coalesce(free_shipping_click_mean, 0.5) as free_shipping_click_mean,
        recsys.eb_prior_strength(
            free_shipping_click_var / nullif(free_shipping_click_mean * (1 - free_shipping_click_mean), 0),
            free_shipping_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as free_shipping_click_strength,
        coalesce(recommendation_click_mean, 0.5) as recommendation_click_mean,
        recsys.eb_prior_strength(
            recommendation_click_var / nullif(recommendation_click_mean * (1 - recommendation_click_mean), 0),
            recommendation_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as recommendation_click_strength,
        coalesce(bundle_click_mean, 0.5) as bundle_click_mean,
        recsys.eb_prior_strength(
            bundle_click_var / nullif(bundle_click_mean * (1 - bundle_click_mean), 0),
            bundle_click_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as bundle_click_strength,
        coalesce(discount_convert_mean, 0.5) as discount_convert_mean,
        recsys.eb_prior_strength(
            discount_convert_var / nullif(discount_convert_mean * (1 - discount_convert_mean), 0),
            discount_convert_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as discount_convert_strength,
        coalesce(free_shipping_convert_mean, 0.5) as free_shipping_convert_mean,
        recsys.eb_prior_strength(
            free_shipping_convert_var / nullif(free_shipping_convert_mean * (1 - free_shipping_convert_mean), 0),
            free_shipping_convert_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as free_shipping_convert_strength,
        coalesce(recommendation_convert_mean, 0.5) as recommendation_convert_mean,
        recsys.eb_prior_strength(
            recommendation_convert_var / nullif(recommendation_convert_mean * (1 - recommendation_convert_mean), 0),
            recommendation_convert_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as recommendation_convert_strength,
        coalesce(bundle_convert_mean, 0.5) as bundle_convert_mean,
        recsys.eb_prior_strength(
            bundle_convert_var / nullif(bundle_convert_mean * (1 - bundle_convert_mean), 0),
            bundle_convert_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as bundle_convert_strength,
        coalesce(organic_discount_mean, 0.5) as organic_discount_mean,
        recsys.eb_prior_strength(
            organic_discount_var / nullif(organic_discount_mean * (1 - organic_discount_mean), 0),
            organic_discount_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as organic_discount_strength,
        coalesce(offer_discount_mean, 0.5) as offer_discount_mean,
        recsys.eb_prior_strength(
            offer_discount_var / nullif(offer_discount_mean * (1 - offer_discount_mean), 0),
            offer_discount_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as offer_discount_strength,
        coalesce(organic_free_shipping_mean, 0.5) as organic_free_shipping_mean,
        recsys.eb_prior_strength(
            organic_free_shipping_var / nullif(organic_free_shipping_mean * (1 - organic_free_shipping_mean), 0),
            organic_free_shipping_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as organic_free_shipping_strength,
        coalesce(offer_free_shipping_mean, 0.5) as offer_free_shipping_mean,
        recsys.eb_prior_strength(
            offer_free_shipping_var / nullif(offer_free_shipping_mean * (1 - offer_free_shipping_mean), 0),
            offer_free_shipping_inv,
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as offer_free_shipping_strength
    from rate_moments
),

-- Priors: each rate's prior as pseudo-counts, a = kappa m successes in k = kappa trials, computed
-- once (materialised) and read by the user rows as one-row subqueries: the posterior mean is
-- (x + a) / (n + k).
rate_pseudo as materialized (
    select
        email_open_strength * email_open_mean as email_open_a,
        email_open_strength as email_open_k,
        sms_open_strength * sms_open_mean as sms_open_a,
        sms_open_strength as sms_open_k,
        push_open_strength * push_open_mean as push_open_a,
        push_open_strength as push_open_k,
        email_click_strength * email_click_mean as email_click_a,
        email_click_strength as email_click_k,
        sms_click_strength * sms_click_mean as sms_click_a,
        sms_click_strength as sms_click_k,
        push_click_strength * push_click_mean as push_click_a,
        push_click_strength as push_click_k,
        discount_click_strength * discount_click_mean as discount_click_a,
        discount_click_strength as discount_click_k,
        free_shipping_click_strength * free_shipping_click_mean as free_shipping_click_a,
        free_shipping_click_strength as free_shipping_click_k,
        recommendation_click_strength * recommendation_click_mean as recommendation_click_a,
        recommendation_click_strength as recommendation_click_k,
        bundle_click_strength * bundle_click_mean as bundle_click_a,
        bundle_click_strength as bundle_click_k,
        discount_convert_strength * discount_convert_mean as discount_convert_a,
        discount_convert_strength as discount_convert_k,
        free_shipping_convert_strength * free_shipping_convert_mean as free_shipping_convert_a,
        free_shipping_convert_strength as free_shipping_convert_k,
        recommendation_convert_strength * recommendation_convert_mean as recommendation_convert_a,
        recommendation_convert_strength as recommendation_convert_k,
        bundle_convert_strength * bundle_convert_mean as bundle_convert_a,
        bundle_convert_strength as bundle_convert_k,
        organic_discount_strength * organic_discount_mean as organic_discount_a,
        organic_discount_strength as organic_discount_k,
        offer_discount_strength * offer_discount_mean as offer_discount_a,
        offer_discount_strength as offer_discount_k,
        organic_free_shipping_strength * organic_free_shipping_mean as organic_free_shipping_a,
        organic_free_shipping_strength as organic_free_shipping_k,
        offer_free_shipping_strength * offer_free_shipping_mean as offer_free_shipping_a,
        offer_free_shipping_strength as offer_free_shipping_k
    from rate_priors
),

-- Priors: the order value's normal-normal model on y = ln(1 + amount) per purchase in the window.
-- Users with purchases have mean ybar_i of their n_i values; the prior mean mu is the average of
-- the ybar_i, the within-user variance s2 pools the users with two or more purchases
-- (sum of squared deviations / sum (n_i - 1)), the between-user variance
-- t2 = var(ybar_i) - s2 mean(1 / n_i), and the prior strength k = s2 / t2 pseudo-orders, clamped
-- to [prior_strength_min, prior_strength_max] (the maximum when t2 <= 0, the minimum when s2 is
-- undefined). The posterior mean is (sum y + k mu) / (n + k).
order_moments as (
    select
        avg(log_amount / nullif(purchase_count, 0)) as mu,
        var_pop(log_amount / nullif(purchase_count, 0)) as ybar_var,
        avg(1.0 / nullif(purchase_count, 0)) as mean_inverse_n,
        sum(log_amount_sq - log_amount ^ 2 / purchase_count) filter (where purchase_count >= 2)
        / nullif(sum(purchase_count - 1) filter (where purchase_count >= 2), 0) as s2
    from user_window
),

order_prior as materialized (
    select
        mu,
        case
            when s2 is null then %(prior_strength_min)s::double precision
            when ybar_var - s2 * mean_inverse_n <= 0 then %(prior_strength_max)s::double precision
            else least(
                greatest(s2 / (ybar_var - s2 * mean_inverse_n), %(prior_strength_min)s),
                %(prior_strength_max)s
            )
        end as strength
    from order_moments
),

-- Priors: the population's mean resultant of organic session start hours (the sum of every
-- session's unit vector over the number of sessions), one pseudo-session for preferred_local_hour:
-- the population's direction, weighted by how concentrated the population is (the resultant's
-- length, 0 to 1). Users who read in the morning, at lunch or in the evening make a population
-- whose direction is an hour nobody prefers, and a short resultant that barely pulls a user there.
hour_prior as materialized (
    select
        coalesce(sum(hour_cos) / nullif(sum(organic_sessions), 0), 0) as hour_cos,
        coalesce(sum(hour_sin) / nullif(sum(organic_sessions), 0), 0) as hour_sin
    from user_window
),

features as (
    select
        p.as_of,
        u.user_id,
        u.recency_days,
        u.frequency_sessions,
        u.monetary_value,
        -- engagement_score: 1 - exp(-(views + 3 add_to_carts + 10 purchases) / 25) in the window
        1 - exp(-(u.views + 3 * u.add_to_carts + 10 * u.purchase_count)::double precision / 25)
            as engagement_score,
        -- discount_sensitivity: share of purchases in the window that used a discount,
        -- Laplace-smoothed (d + 1) / (n + 2); 0.5 with no purchase
        (u.discount_purchases + 1)::double precision / (u.purchase_count + 2) as discount_sensitivity,
        -- free_shipping_preference: share of purchases in the window that used free shipping,
        -- Laplace-smoothed (f + 1) / (n + 2)
        (u.free_shipping_purchases + 1)::double precision / (u.purchase_count + 2)
            as free_shipping_preference,
        -- email_responsiveness, sms_responsiveness, push_responsiveness: the response rate to the
        -- channel c. Its prior is c's share of the sessions brought by a messaging channel in the
        -- window, smoothed: m_c = (sessions from c + 1) / (sessions from email, sms and push + 3).
        -- The user's clicks on past offers on c update it as a beta posterior with weight 4:
        -- (clicks on c + 4 m_c) / (offers on c + 4), in (0, 1). Only offers sent before as_of
        -- minus the attribution window whose click outcome is recorded (clicked not null) count.
        (
            coalesce(c.email_clicks, 0)
            + 4 * (u.email_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(c.email_offers, 0) + 4) as email_responsiveness,
        (
            coalesce(c.sms_clicks, 0)
            + 4 * (u.sms_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(c.sms_offers, 0) + 4) as sms_responsiveness,
        (
            coalesce(c.push_clicks, 0)
            + 4 * (u.push_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(c.push_offers, 0) + 4) as push_responsiveness,
        u.days_since_last_purchase,
        u.purchase_count,
        -- offers_last_7d: offers sent in the 7 days before as_of 00:00 UTC
        coalesce(c.offers_last_7d, 0)::integer as offers_last_7d,
        -- days_since_last_offer: days since the last offer sent, capped at the recency cap; the cap
        -- when there was none
        coalesce(
            least(
                extract(epoch from p.as_of_at - c.last_offer_at)::double precision / 86400,
                p.recency_cap_days
            ),
            p.recency_cap_days
        ) as days_since_last_offer,
        -- top_category: see category_scores; 'unknown' without a categorised event in the window
        coalesce(t.top_category, 'unknown') as top_category,
        r.r_score,
        r.f_score,
        r.m_score,
        -- morning_share: sessions in the window that started 05:00-10:59 in the user's time zone,
        -- smoothed (m + 1) / (sessions + 3); evening_share: 17:00-04:59, (e + 1) / (sessions + 3).
        -- They say when a user reads messages: the offer's timing should meet it.
        (u.morning_sessions + 1)::double precision / (u.frequency_sessions + 3) as morning_share,
        (u.evening_sessions + 1)::double precision / (u.frequency_sessions + 3) as evening_share,
        -- category_focus: the top category's share of the window's category interest; 0 with none
        coalesce(t.category_focus, 0) as category_focus,
        -- Priors (migration 013). The Beta-Binomial rates: posterior mean (x + kappa m) / (n + kappa)
        -- with the date's population prior (rate_priors, rate_pseudo). Channel c: {c}_open_rate =
        -- opens per offer sent on c, {c}_click_rate = clicks per opened offer on c. Offer type t:
        -- {t}_click_rate = clicks per opened offer of t, {t}_convert_rate = conversions per clicked
        -- offer of t. Only offers sent before as_of minus the attribution window count, with the
        -- outcome recorded (a click counts as an open).
        (coalesce(c.email_open_x, 0) + (select email_open_a from rate_pseudo))
        / (coalesce(c.email_open_n, 0) + (select email_open_k from rate_pseudo)) as email_open_rate,
        (coalesce(c.sms_open_x, 0) + (select sms_open_a from rate_pseudo))
        / (coalesce(c.sms_open_n, 0) + (select sms_open_k from rate_pseudo)) as sms_open_rate,
        (coalesce(c.push_open_x, 0) + (select push_open_a from rate_pseudo))
        / (coalesce(c.push_open_n, 0) + (select push_open_k from rate_pseudo)) as push_open_rate,
        (coalesce(c.email_click_x, 0) + (select email_click_a from rate_pseudo))
        / (coalesce(c.email_click_n, 0) + (select email_click_k from rate_pseudo)) as email_click_rate,
        (coalesce(c.sms_click_x, 0) + (select sms_click_a from rate_pseudo))
        / (coalesce(c.sms_click_n, 0) + (select sms_click_k from rate_pseudo)) as sms_click_rate,
        (coalesce(c.push_click_x, 0) + (select push_click_a from rate_pseudo))
        / (coalesce(c.push_click_n, 0) + (select push_click_k from rate_pseudo)) as push_click_rate,
        (coalesce(c.discount_click_x, 0) + (select discount_click_a from rate_pseudo))
        / (coalesce(c.discount_click_n, 0) + (select discount_click_k from rate_pseudo)) as discount_click_rate,
        (coalesce(c.free_shipping_click_x, 0) + (select free_shipping_click_a from rate_pseudo))
        / (coalesce(c.free_shipping_click_n, 0) + (select free_shipping_click_k from rate_pseudo))
            as free_shipping_click_rate,
        (coalesce(c.recommendation_click_x, 0) + (select recommendation_click_a from rate_pseudo))
        / (coalesce(c.recommendation_click_n, 0) + (select recommendation_click_k from rate_pseudo))
            as recommendation_click_rate,
        (coalesce(c.bundle_click_x, 0) + (select bundle_click_a from rate_pseudo))
        / (coalesce(c.bundle_click_n, 0) + (select bundle_click_k from rate_pseudo)) as bundle_click_rate,
        (coalesce(c.discount_convert_x, 0) + (select discount_convert_a from rate_pseudo))
        / (coalesce(c.discount_convert_n, 0) + (select discount_convert_k from rate_pseudo)) as discount_convert_rate,
        (coalesce(c.free_shipping_convert_x, 0) + (select free_shipping_convert_a from rate_pseudo))
        / (coalesce(c.free_shipping_convert_n, 0) + (select free_shipping_convert_k from rate_pseudo))
            as free_shipping_convert_rate,
        (coalesce(c.recommendation_convert_x, 0) + (select recommendation_convert_a from rate_pseudo))
        / (coalesce(c.recommendation_convert_n, 0) + (select recommendation_convert_k from rate_pseudo))
            as recommendation_convert_rate,
        (coalesce(c.bundle_convert_x, 0) + (select bundle_convert_a from rate_pseudo))
        / (coalesce(c.bundle_convert_n, 0) + (select bundle_convert_k from rate_pseudo)) as bundle_convert_rate,
        -- organic_discount_share, organic_free_shipping_share: purchases that used a discount /
        -- free shipping among the window's organic purchases; offer_discount_share,
        -- offer_free_shipping_share: the same among the offer-driven ones (rate_moments)
        (u.organic_discount_purchases + (select organic_discount_a from rate_pseudo))
        / (u.organic_purchases + (select organic_discount_k from rate_pseudo)) as organic_discount_share,
        (u.offer_discount_purchases + (select offer_discount_a from rate_pseudo))
        / (u.offer_purchases + (select offer_discount_k from rate_pseudo)) as offer_discount_share,
        (u.organic_free_shipping_purchases + (select organic_free_shipping_a from rate_pseudo))
        / (u.organic_purchases + (select organic_free_shipping_k from rate_pseudo)) as organic_free_shipping_share,
        (u.offer_free_shipping_purchases + (select offer_free_shipping_a from rate_pseudo))
        / (u.offer_purchases + (select offer_free_shipping_k from rate_pseudo)) as offer_free_shipping_share,
        -- category_focus_posterior: the largest posterior mean share of the user's category views
        -- under the Dirichlet(kappa pi) prior (category_population, category_prior):
        -- max_k (views_k + kappa pi_k) / (views + kappa); the population's largest share pi_max
        -- without a categorised view
        greatest(
            coalesce(cpost.top_posterior, 0),
            (select cp.strength * coalesce(cp.share_max, 0) from category_prior as cp)
        ) / (coalesce(t.category_views, 0) + (select cp.strength from category_prior as cp))
            as category_focus_posterior,
        -- order_value: exp of the posterior mean of ln(1 + amount) (order_prior), minus 1: a
        -- shrunk typical order value; the prior's for a user without purchases, 0 when nobody
        -- bought in the window
        coalesce(
            exp(
                (u.log_amount + (select op.strength * op.mu from order_prior as op))
                / (u.purchase_count + (select op.strength from order_prior as op))
            ) - 1,
            0
        ) as order_value,
        -- preferred_local_hour: the circular mean of the local start hours of the user's organic
        -- sessions in the window, with the population's mean resultant as one pseudo-session
        -- (hour_prior), in [0, 24); null only when the date has no organic session at all.
        -- preferred_hour_certainty: the length of the user's own resultant (sum of the sessions'
        -- unit vectors, = mean resultant length x sessions), 0 without a session
        case
            when
                u.hour_cos + (select hour_cos from hour_prior) <> 0
                or u.hour_sin + (select hour_sin from hour_prior) <> 0
                then (
                    atan2d(
                        u.hour_sin + (select hour_sin from hour_prior), u.hour_cos + (select hour_cos from hour_prior)
                    )
                    + case
                        when
                            atan2d(
                                u.hour_sin + (select hour_sin from hour_prior),
                                u.hour_cos + (select hour_cos from hour_prior)
                            )
                            < 0
                            then 360
                        else 0
                    end
                ) / 15
        end as preferred_local_hour,
        sqrt(u.hour_cos ^ 2 + u.hour_sin ^ 2) as preferred_hour_certainty,
        -- local_release_hour: the circular mean local hour of the releases (sent_at minus the
        -- timing's delay) of the offers sent in the feature window to the users of the user's
        -- time zone (zone_release), in [0, 24); null when that zone had none
        case
            when zr.hour_cos <> 0 or zr.hour_sin <> 0
                then (
                    atan2d(zr.hour_sin, zr.hour_cos)
                    + case when atan2d(zr.hour_sin, zr.hour_cos) < 0 then 360 else 0 end
                ) / 15
        end as local_release_hour
    from user_window as u
    cross join params as p
    inner join rfm_scores as r on u.user_id = r.user_id
    left join top_categories as t on u.user_id = t.user_id
    left join category_posterior as cpost on u.user_id = cpost.user_id
    left join contact_history as c on u.user_id = c.user_id
    left join recsys.users as z on u.user_id = z.user_id
    left join zone_release as zr on coalesce(z.timezone, 'UTC') = zr.timezone
),

final as (
    select
        as_of,
        user_id,
        recency_days,
        frequency_sessions,
        monetary_value,
        engagement_score,
        discount_sensitivity,
        free_shipping_preference,
        email_responsiveness,
        sms_responsiveness,
        push_responsiveness,
        days_since_last_purchase,
        purchase_count,
        offers_last_7d,
        days_since_last_offer,
        top_category,
        r_score,
        f_score,
        m_score,
        -- segment, first rule that matches:
        --   no purchase in the window: 'browser' if recency_days <= 30, else 'dormant'
        --   r >= 4 and f >= 4 and m >= 4: 'champion'
        --   (f >= 4 or m >= 4) and r >= 3: 'loyal'
        --   r >= 4 and f <= 2: 'new'
        --   r <= 2 and (f >= 3 or m >= 3): 'at_risk'
        --   r <= 2: 'hibernating'
        --   otherwise: 'promising'
        case
            when purchase_count = 0 and recency_days <= 30 then 'browser'
            when purchase_count = 0 then 'dormant'
            when r_score >= 4 and f_score >= 4 and m_score >= 4 then 'champion'
            when (f_score >= 4 or m_score >= 4) and r_score >= 3 then 'loyal'
            when r_score >= 4 and f_score <= 2 then 'new'
            when r_score <= 2 and (f_score >= 3 or m_score >= 3) then 'at_risk'
            when r_score <= 2 then 'hibernating'
            else 'promising'
        end as segment,
        morning_share,
        evening_share,
        category_focus,
        email_open_rate,
        sms_open_rate,
        push_open_rate,
        email_click_rate,
        sms_click_rate,
        push_click_rate,
        discount_click_rate,
        free_shipping_click_rate,
        recommendation_click_rate,
        bundle_click_rate,
        discount_convert_rate,
        free_shipping_convert_rate,
        recommendation_convert_rate,
        bundle_convert_rate,
        organic_discount_share,
        offer_discount_share,
        organic_free_shipping_share,
        offer_free_shipping_share,
        category_focus_posterior,
        order_value,
        preferred_local_hour,
        preferred_hour_certainty,
        local_release_hour
    from features
)

select * from final
