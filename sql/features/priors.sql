-- A step of a date's feature build (recsys.data.features), once per date after every shard's
-- user_stats.sql: the date's population priors, fitted to all its users (empirical Bayes), as one row.
-- user_features.sql reads them.
--
-- Parameters: prior_strength_min, prior_strength_max (user_features.sql).
-- Identifiers: {stats}, every shard's user_stats.sql rows in user_id order (the sums below add in that
-- order, so a date's priors are the same whatever the number of shards); {pop}, the category shares
-- (category_population.sql).
--
-- The shards' rows hold both the users with events (user_window's columns, null for the others) and
-- the users with offers (contact_history's columns, null for the others): each aggregate skips the
-- nulls, so it reads the users it did in the single query this build replaced.

with population_shares as (
    select
        coalesce(sum(c.share ^ 2 order by c.product_category), 0) as share_sq,
        coalesce(max(c.share), 0) as share_max
    from {pop} as c
),

-- Every moment of the priors in one pass over the shards' rows.
--
-- Priors: the moments of each Beta-Binomial rate over the users with at least one trial (n > 0):
-- the mean m of their rates x / n, the variance of the rates around it, and the mean of 1 / n.
-- The funnel rates come from contact_history's columns (a user without offers has no trial), the
-- purchase shares from user_window's. Those split the window's purchases into organic ones (in a
-- session no event of which names email, sms or push) and offer-driven ones (the rest: in a session a
-- message brought, which is how an offer click shows in the events; a newsletter visit counts there
-- too, the events cannot tell them apart).
--
-- Priors: the order value's normal-normal model on y = ln(1 + amount) per purchase in the window.
-- Users with purchases have mean ybar_i of their n_i values; the prior mean mu is the average of
-- the ybar_i, the within-user variance s2 pools the users with two or more purchases
-- (sum of squared deviations / sum (n_i - 1)), the between-user variance
-- t2 = var(ybar_i) - s2 mean(1 / n_i), and the prior strength k = s2 / t2 pseudo-orders, clamped
-- to [prior_strength_min, prior_strength_max] (the maximum when t2 <= 0, the minimum when s2 is
-- undefined). The posterior mean is (sum y + k mu) / (n + k).
--
-- Priors: the population's mean resultant of organic session start hours (the sum of every
-- session's unit vector over the number of sessions), one pseudo-session for preferred_local_hour:
-- the population's direction, weighted by how concentrated the population is (the resultant's
-- length, 0 to 1). Users who read in the morning, at lunch or in the evening make a population
-- whose direction is an hour nobody prefers, and a short resultant that barely pulls a user there
-- (hour_cos, hour_sin).
--
-- Priors: the Dirichlet concentration kappa of the category interest (method of moments over the
-- users with a categorised view: the filters), and the population's largest share
-- (population_shares: also sum pi^2).
rate_moments as materialized (
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
        avg(1.0 / nullif(bundle_convert_n, 0)) as bundle_convert_inv,
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
        avg(1.0 / nullif(offer_purchases, 0)) as offer_free_shipping_inv,
        avg(log_amount / nullif(purchase_count, 0)) as mu,
        var_pop(log_amount / nullif(purchase_count, 0)) as ybar_var,
        avg(1.0 / nullif(purchase_count, 0)) as mean_inverse_n,
        sum(log_amount_sq - log_amount ^ 2 / purchase_count) filter (where purchase_count >= 2)
        / nullif(sum(purchase_count - 1) filter (where purchase_count >= 2), 0) as s2,
        coalesce(sum(hour_cos) / nullif(sum(organic_sessions), 0), 0) as hour_cos,
        coalesce(sum(hour_sin) / nullif(sum(organic_sessions), 0), 0) as hour_sin,
        recsys.eb_prior_strength(
            avg(
                s.category_views_sq / s.category_views ^ 2
                - 2 * s.category_views_share / s.category_views
                + p.share_sq
            ) filter (where s.category_views > 0)
            / nullif(1 - max(p.share_sq) filter (where s.category_views > 0), 0),
            avg(1.0 / s.category_views) filter (where s.category_views > 0),
            %(prior_strength_min)s, %(prior_strength_max)s
        ) as category_strength,
        max(p.share_max) filter (where s.category_views > 0) as category_share_max
    from {stats} as s
    cross join population_shares as p
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
    from rate_moments
)

select
    rp.*,
    m.category_strength,
    m.category_share_max,
    op.mu as order_mu,
    op.strength as order_strength,
    m.hour_cos,
    m.hour_sin
from rate_pseudo as rp
cross join order_prior as op
cross join rate_moments as m
