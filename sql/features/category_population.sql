-- The first step of a date's feature build (recsys.data.features): each category's share pi_k of the
-- feature window's categorised views, over all users: the population the Dirichlet prior of the
-- category focus is centred on (user_stats.sql, priors.sql, user_features.sql). A category with events
-- but no view has share 0; the share is null when the window has no categorised view.
--
-- Parameters: as_of, window_days, recency_cap_days (user_features.sql describes them).
--
-- One row per category; "C" collation as in user_categories.sql, so the names compare as bytes.

select
    e.product_category collate "C" as product_category,  -- noqa: RF03
    count(*) filter (where e.action = 'view')::double precision
    / nullif(sum(count(*) filter (where e.action = 'view')) over (), 0) as share
from recsys.behavior_events as e
where
    e.event_at
    >= (%(as_of)s::date - least(%(window_days)s, %(recency_cap_days)s))::timestamp at time zone 'UTC'
    and e.event_at < %(as_of)s::date::timestamp at time zone 'UTC'
    and e.product_category is not null
group by e.product_category collate "C"  -- noqa: RF03
