-- User features as of a date: one row per user with at least one event in the recency cap window
-- before as_of 00:00 UTC, with exactly the columns of recsys.user_features. The last step of
-- recsys.data.features.build_features, one per shard of users; its rows go into the date's new
-- partition. The build's steps, each a file of this folder:
--   1. category_population.sql: each category's share of the window's views (all users);
--   2. per shard: user_categories.sql, each user's interest per category; user_stats.sql, every
--      count, sum and last time of each user's events and offers;
--   3. over all shards: priors.sql, the population's priors; rfm_bounds.sql, where the RFM
--      quintiles split; zone_release.sql, each time zone's release hour;
--   4. per shard: this file, the features.
--
-- Parameters (psycopg2 pyformat):
--   as_of             the date; only events and offers strictly before as_of 00:00 UTC are read
--   window_days       feature window for frequency, monetary, engagement, preferences, category
--   recency_cap_days  cap of the recency-type features, also the lower bound of the event scan
--   attribution_days  offers count towards responsiveness once their outcome window has closed
--   prior_strength_min, prior_strength_max
--                     bounds of the empirical-Bayes prior strengths, in pseudo-observations
--                     (recsys.eb_prior_strength)
-- Identifiers: {stats} and {cats}, the shard's user_stats.sql and user_categories.sql rows;
-- {priors}, {rfm} and {zones}, the date's priors.sql, rfm_bounds.sql and zone_release.sql rows.
--
-- The prior-shrunk features (migration 013, the "priors" parts below and in priors.sql) are
-- posterior means under population priors fitted to the users of the date (empirical Bayes: the
-- method of moments of recsys.eb_prior_strength, or the normal-normal one for the order value).
-- Their inputs are the same point-in-time data as the others: events before as_of, and offers'
-- outcomes only when the offer was sent at least attribution_days before as_of.

with params as (
    select
        %(as_of)s::date as as_of,
        %(as_of)s::date::timestamp at time zone 'UTC' as as_of_at,
        %(recency_cap_days)s::double precision as recency_cap_days
),

-- The shard's users with an event in the cap window (user_stats.sql: user_window's, top_categories'
-- and contact_history's columns in one row), with their RFM quintiles: ntile(5) over the users of
-- the date, equal values split by user_id so the scores are reproducible, computed from where the
-- quintiles split ({rfm}, rfm_bounds.sql).
-- r_score: 5 = most recent (smallest recency_days).
-- f_score: 5 = most sessions in the window.
-- m_score: quintile among the users who spent something in the window (5 = highest spend); users
-- with no spend get 1.
user_window as (
    select
        s.*,
        (
            1
            + coalesce(s.recency_days < b.r_recency_days_1 or (s.recency_days = b.r_recency_days_1 and s.user_id > b.r_user_id_1), false)::int
            + coalesce(s.recency_days < b.r_recency_days_2 or (s.recency_days = b.r_recency_days_2 and s.user_id > b.r_user_id_2), false)::int
            + coalesce(s.recency_days < b.r_recency_days_3 or (s.recency_days = b.r_recency_days_3 and s.user_id > b.r_user_id_3), false)::int
            + coalesce(s.recency_days < b.r_recency_days_4 or (s.recency_days = b.r_recency_days_4 and s.user_id > b.r_user_id_4), false)::int
        )::smallint as r_score,
        (
            1
            + coalesce(s.frequency_sessions > b.f_frequency_sessions_1 or (s.frequency_sessions = b.f_frequency_sessions_1 and s.user_id > b.f_user_id_1), false)::int
            + coalesce(s.frequency_sessions > b.f_frequency_sessions_2 or (s.frequency_sessions = b.f_frequency_sessions_2 and s.user_id > b.f_user_id_2), false)::int
            + coalesce(s.frequency_sessions > b.f_frequency_sessions_3 or (s.frequency_sessions = b.f_frequency_sessions_3 and s.user_id > b.f_user_id_3), false)::int
            + coalesce(s.frequency_sessions > b.f_frequency_sessions_4 or (s.frequency_sessions = b.f_frequency_sessions_4 and s.user_id > b.f_user_id_4), false)::int
        )::smallint as f_score,
        case
            when s.monetary_value > 0
                then (
                    1
                    + coalesce(s.monetary_value > b.m_monetary_value_1 or (s.monetary_value = b.m_monetary_value_1 and s.user_id > b.m_user_id_1), false)::int
                    + coalesce(s.monetary_value > b.m_monetary_value_2 or (s.monetary_value = b.m_monetary_value_2 and s.user_id > b.m_user_id_2), false)::int
                    + coalesce(s.monetary_value > b.m_monetary_value_3 or (s.monetary_value = b.m_monetary_value_3 and s.user_id > b.m_user_id_3), false)::int
                    + coalesce(s.monetary_value > b.m_monetary_value_4 or (s.monetary_value = b.m_monetary_value_4 and s.user_id > b.m_user_id_4), false)::int
                )
            else 1
        end::smallint as m_score
    from {stats} as s
    cross join {rfm} as b
    where s.has_events
),

-- The date's priors (priors.sql), read by the user rows as one-row subqueries.
rate_pseudo as materialized (
    select * from {priors}
),

category_prior as materialized (
    select
        category_strength as strength,
        category_share_max as share_max
    from {priors}
),

order_prior as materialized (
    select
        order_mu as mu,
        order_strength as strength
    from {priors}
),

hour_prior as materialized (
    select
        hour_cos,
        hour_sin
    from {priors}
),

-- Priors: per user, the largest numerator max_k (n_k + kappa pi_k) of the category posterior
-- means, once kappa is known: a second pass over the shard's user x category rows.
category_posterior as (
    select
        s.user_id,
        max(s.category_views::double precision + (select cp.strength from category_prior as cp) * s.share)
            as top_posterior
    from {cats} as s
    group by s.user_id
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
        -- channel u. Its prior is c's share of the sessions brought by a messaging channel in the
        -- window, smoothed: m_c = (sessions from c + 1) / (sessions from email, sms and push + 3).
        -- The user's clicks on past offers on c update it as a beta posterior with weight 4:
        -- (clicks on c + 4 m_c) / (offers on c + 4), in (0, 1). Only offers sent before as_of
        -- minus the attribution window whose click outcome is recorded (clicked not null) count.
        (
            coalesce(u.email_clicks, 0)
            + 4 * (u.email_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(u.email_offers, 0) + 4) as email_responsiveness,
        (
            coalesce(u.sms_clicks, 0)
            + 4 * (u.sms_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(u.sms_offers, 0) + 4) as sms_responsiveness,
        (
            coalesce(u.push_clicks, 0)
            + 4 * (u.push_sessions + 1)::double precision
            / (u.email_sessions + u.sms_sessions + u.push_sessions + 3)
        ) / (coalesce(u.push_offers, 0) + 4) as push_responsiveness,
        u.days_since_last_purchase,
        u.purchase_count,
        -- offers_last_7d: offers sent in the 7 days before as_of 00:00 UTC
        coalesce(u.offers_last_7d, 0)::integer as offers_last_7d,
        -- days_since_last_offer: days since the last offer sent, capped at the recency cap; the cap
        -- when there was none
        coalesce(
            least(
                extract(epoch from p.as_of_at - u.last_offer_at)::double precision / 86400,
                p.recency_cap_days
            ),
            p.recency_cap_days
        ) as days_since_last_offer,
        -- top_category: see category_scores; 'unknown' without a categorised event in the window
        coalesce(u.top_category, 'unknown') as top_category,
        u.r_score,
        u.f_score,
        u.m_score,
        -- morning_share: sessions in the window that started 05:00-10:59 in the user's time zone,
        -- smoothed (m + 1) / (sessions + 3); evening_share: 17:00-04:59, (e + 1) / (sessions + 3).
        -- They say when a user reads messages: the offer's timing should meet it.
        (u.morning_sessions + 1)::double precision / (u.frequency_sessions + 3) as morning_share,
        (u.evening_sessions + 1)::double precision / (u.frequency_sessions + 3) as evening_share,
        -- category_focus: the top category's share of the window's category interest; 0 with none
        coalesce(u.category_focus, 0) as category_focus,
        -- Priors (migration 013). The Beta-Binomial rates: posterior mean (x + kappa m) / (n + kappa)
        -- with the date's population prior (rate_priors, rate_pseudo). Channel c: <c>_open_rate =
        -- opens per offer sent on c, <c>_click_rate = clicks per opened offer on u. Offer type t:
        -- <t>_click_rate = clicks per opened offer of t, <t>_convert_rate = conversions per clicked
        -- offer of u. Only offers sent before as_of minus the attribution window count, with the
        -- outcome recorded (a click counts as an open).
        (coalesce(u.email_open_x, 0) + (select email_open_a from rate_pseudo))
        / (coalesce(u.email_open_n, 0) + (select email_open_k from rate_pseudo)) as email_open_rate,
        (coalesce(u.sms_open_x, 0) + (select sms_open_a from rate_pseudo))
        / (coalesce(u.sms_open_n, 0) + (select sms_open_k from rate_pseudo)) as sms_open_rate,
        (coalesce(u.push_open_x, 0) + (select push_open_a from rate_pseudo))
        / (coalesce(u.push_open_n, 0) + (select push_open_k from rate_pseudo)) as push_open_rate,
        (coalesce(u.email_click_x, 0) + (select email_click_a from rate_pseudo))
        / (coalesce(u.email_click_n, 0) + (select email_click_k from rate_pseudo)) as email_click_rate,
        (coalesce(u.sms_click_x, 0) + (select sms_click_a from rate_pseudo))
        / (coalesce(u.sms_click_n, 0) + (select sms_click_k from rate_pseudo)) as sms_click_rate,
        (coalesce(u.push_click_x, 0) + (select push_click_a from rate_pseudo))
        / (coalesce(u.push_click_n, 0) + (select push_click_k from rate_pseudo)) as push_click_rate,
        (coalesce(u.discount_click_x, 0) + (select discount_click_a from rate_pseudo))
        / (coalesce(u.discount_click_n, 0) + (select discount_click_k from rate_pseudo)) as discount_click_rate,
        (coalesce(u.free_shipping_click_x, 0) + (select free_shipping_click_a from rate_pseudo))
        / (coalesce(u.free_shipping_click_n, 0) + (select free_shipping_click_k from rate_pseudo))
            as free_shipping_click_rate,
        (coalesce(u.recommendation_click_x, 0) + (select recommendation_click_a from rate_pseudo))
        / (coalesce(u.recommendation_click_n, 0) + (select recommendation_click_k from rate_pseudo))
            as recommendation_click_rate,
        (coalesce(u.bundle_click_x, 0) + (select bundle_click_a from rate_pseudo))
        / (coalesce(u.bundle_click_n, 0) + (select bundle_click_k from rate_pseudo)) as bundle_click_rate,
        (coalesce(u.discount_convert_x, 0) + (select discount_convert_a from rate_pseudo))
        / (coalesce(u.discount_convert_n, 0) + (select discount_convert_k from rate_pseudo)) as discount_convert_rate,
        (coalesce(u.free_shipping_convert_x, 0) + (select free_shipping_convert_a from rate_pseudo))
        / (coalesce(u.free_shipping_convert_n, 0) + (select free_shipping_convert_k from rate_pseudo))
            as free_shipping_convert_rate,
        (coalesce(u.recommendation_convert_x, 0) + (select recommendation_convert_a from rate_pseudo))
        / (coalesce(u.recommendation_convert_n, 0) + (select recommendation_convert_k from rate_pseudo))
            as recommendation_convert_rate,
        (coalesce(u.bundle_convert_x, 0) + (select bundle_convert_a from rate_pseudo))
        / (coalesce(u.bundle_convert_n, 0) + (select bundle_convert_k from rate_pseudo)) as bundle_convert_rate,
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
        ) / (coalesce(u.category_views, 0) + (select cp.strength from category_prior as cp))
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
    left join category_posterior as cpost on u.user_id = cpost.user_id
    left join {zones} as zr on u.timezone = zr.timezone
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
