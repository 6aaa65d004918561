-- A step of a date's feature build (recsys.data.features), once per date after every shard's
-- user_stats.sql: where the date's RFM quintiles split, as one row, so that each shard scores its own
-- users (user_features.sql) exactly as ntile(5) over every user of the date would.
--
-- The quintiles order the users with events (has_events) by a key made unique by user_id:
--   r: recency_days descending, then user_id (5 = most recent);
--   f: frequency_sessions, then user_id (5 = most sessions);
--   m: monetary_value, then user_id, among the users who spent something (5 = highest spend; 1 for
--      the users who spent nothing).
-- ntile(5) over n rows gives the first n mod 5 quintiles n / 5 + 1 rows and the others n / 5, so
-- quintile b (1 to 4) ends at row b (n / 5) + least(b, n mod 5). The row holds the key of those 4
-- last rows (r_recency_days_b, r_user_id_b, ...); a user's score is 1 plus the number of them the
-- user's key comes after. A key is null only where its quintile is empty (no user spent anything:
-- every m score is 1).
--
-- Identifiers: {stats}, every shard's user_stats.sql rows.

with users as not materialized (
    select
        s.user_id,
        s.recency_days,
        s.frequency_sessions,
        s.monetary_value
    from {stats} as s
    where s.has_events
),

counts as (
    select
        count(*) as n,
        count(*) filter (where monetary_value > 0) as n_spent
    from users
),

ends as (
    select
        b.b,
        b.b * (c.n / 5) + least(b.b, mod(c.n, 5)) as end_row,
        b.b * (c.n_spent / 5) + least(b.b, mod(c.n_spent, 5)) as end_row_spent
    from counts as c
    cross join generate_series(1, 4) as b (b)
),

r_order as (
    select
        recency_days,
        user_id,
        row_number() over (order by recency_days desc, user_id asc) as row_no
    from users
),

f_order as (
    select
        frequency_sessions,
        user_id,
        row_number() over (order by frequency_sessions asc, user_id asc) as row_no
    from users
),

m_order as (
    select
        monetary_value,
        user_id,
        row_number() over (order by monetary_value asc, user_id asc) as row_no
    from users
    where monetary_value > 0
),

r_bounds as (
    select
        e.b,
        r.recency_days,
        r.user_id
    from ends as e
    left join r_order as r on e.end_row = r.row_no
),

f_bounds as (
    select
        e.b,
        f.frequency_sessions,
        f.user_id
    from ends as e
    left join f_order as f on e.end_row = f.row_no
),

m_bounds as (
    select
        e.b,
        m.monetary_value,
        m.user_id
    from ends as e
    left join m_order as m on e.end_row_spent = m.row_no
)

select
    r.*,
    f.*,
    m.*
from (
    select
        max(recency_days) filter (where b = 1) as r_recency_days_1,
        max(recency_days) filter (where b = 2) as r_recency_days_2,
        max(recency_days) filter (where b = 3) as r_recency_days_3,
        max(recency_days) filter (where b = 4) as r_recency_days_4,
        max(user_id) filter (where b = 1) as r_user_id_1,
        max(user_id) filter (where b = 2) as r_user_id_2,
        max(user_id) filter (where b = 3) as r_user_id_3,
        max(user_id) filter (where b = 4) as r_user_id_4
    from r_bounds
) as r
cross join (
    select
        max(frequency_sessions) filter (where b = 1) as f_frequency_sessions_1,
        max(frequency_sessions) filter (where b = 2) as f_frequency_sessions_2,
        max(frequency_sessions) filter (where b = 3) as f_frequency_sessions_3,
        max(frequency_sessions) filter (where b = 4) as f_frequency_sessions_4,
        max(user_id) filter (where b = 1) as f_user_id_1,
        max(user_id) filter (where b = 2) as f_user_id_2,
        max(user_id) filter (where b = 3) as f_user_id_3,
        max(user_id) filter (where b = 4) as f_user_id_4
    from f_bounds
) as f
cross join (
    select
        max(monetary_value) filter (where b = 1) as m_monetary_value_1,
        max(monetary_value) filter (where b = 2) as m_monetary_value_2,
        max(monetary_value) filter (where b = 3) as m_monetary_value_3,
        max(monetary_value) filter (where b = 4) as m_monetary_value_4,
        max(user_id) filter (where b = 1) as m_user_id_1,
        max(user_id) filter (where b = 2) as m_user_id_2,
        max(user_id) filter (where b = 3) as m_user_id_3,
        max(user_id) filter (where b = 4) as m_user_id_4
    from m_bounds
) as m
