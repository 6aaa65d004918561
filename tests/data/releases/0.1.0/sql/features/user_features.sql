-- User features as of a date: one row per user with at least one event in the recency cap window
-- before as_of 00:00 UTC, with exactly the columns of recsys.user_features. Run by
-- recsys.features.build_features, which inserts the rows into a new partition.
--
-- Parameters (psycopg2 pyformat):
--   as_of             the date; only events and offers strictly before as_of 00:00 UTC are read
--   window_days       feature window for frequency, monetary, engagement, preferences, category
--   recency_cap_days  cap of the recency-type features, also the lower bound of the event scan
--   attribution_days  offers count towards responsiveness once their outcome window has closed
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
        %(recency_cap_days)s::double precision as recency_cap_days
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
        count(*) filter (where action = 'view') as views,
        count(*) filter (where action = 'add_to_cart') as add_to_carts,
        count(*) filter (where action = 'purchase') as purchases,
        count(*) filter (where action = 'purchase' and discount_used) as discount_purchases,
        count(*) filter (where action = 'purchase' and free_shipping_used) as free_shipping_purchases,
        sum(amount) filter (where action = 'purchase') as purchase_amount,
        bool_or(channel = 'email') as is_from_email,
        bool_or(channel = 'sms') as is_from_sms,
        bool_or(channel = 'push') as is_from_push
    from window_events
    group by user_id, session_id
),

-- The local hour each session started at, in the user's time zone (UTC without a users row).
sessions_local as (
    select
        s.*,
        extract(hour from s.first_event_at at time zone coalesce(z.timezone, 'UTC')) as local_hour
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
        sum(purchase_amount) as purchase_amount
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
        ) as category_score
    from window_events
    where product_category is not null
    group by user_id, product_category
),

-- The category with the highest score; ties go to the first name in byte (code point) order.
top_categories as (
    select
        user_id,
        (array_agg(product_category order by category_score desc, product_category asc))[1] as top_category,
        max(category_score)::double precision / sum(category_score) as category_focus
    from category_scores
    group by user_id
),

-- Every offer sent before as_of 00:00 UTC: the logged ones (history, and the system's own once
-- their attribution window closed, v_offer_log) and the system's own sent offers still in their
-- window. Those are contacts already (fatigue: offers_last_7d, days_since_last_offer) but their
-- outcome is not final, so they never count towards responsiveness. The second branch is the
-- complement of v_offer_log's own offers (same now(), same window: recsys.attribution_window(), set
-- from attribution_days by the build); its campaign_date bound prunes partitions and reaches back 8
-- days or the window plus 2, whichever is longer (an offer is sent within a day or so of its
-- campaign date; one sent later than that after it is missed).
offers as (
    select
        o.user_id,
        o.sent_at,
        o.channel,
        o.clicked,
        o.sent_at < p.outcomes_known_before_at and o.clicked is not null as is_outcome_known,
        o.sent_at >= p.offers_7d_start_at as is_last_7d
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
        c.sent_at >= p.offers_7d_start_at as is_last_7d
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
        count(*) filter (where is_outcome_known and channel = 'email') as email_offers,
        count(*) filter (where is_outcome_known and channel = 'email' and clicked) as email_clicks,
        count(*) filter (where is_outcome_known and channel = 'sms') as sms_offers,
        count(*) filter (where is_outcome_known and channel = 'sms' and clicked) as sms_clicks,
        count(*) filter (where is_outcome_known and channel = 'push') as push_offers,
        count(*) filter (where is_outcome_known and channel = 'push' and clicked) as push_clicks
    from offers
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
        coalesce(a.evening_sessions, 0) as evening_sessions
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
        u.evening_sessions
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
        coalesce(t.category_focus, 0) as category_focus
    from user_window as u
    cross join params as p
    inner join rfm_scores as r on u.user_id = r.user_id
    left join top_categories as t on u.user_id = t.user_id
    left join contact_history as c on u.user_id = c.user_id
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
        category_focus
    from features
)

select * from final
