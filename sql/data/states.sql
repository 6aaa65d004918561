-- Users as the policy sees them on a night: the stored features as of %(as_of)s ({features}: the
-- feature columns, in observation order), then the consent and the reachability per channel
-- (consent and an address), then the top category. %(ids)s: only these users (null: all).
-- %(rate)s: a uniform sample, each user kept when the hash of its id with %(seed)s falls below the
-- rate (null: every user); the same users for the same seed, night after night.
select
    f.user_id,
    {features},
    coalesce(u.email_opt_in, false) as email_consent,
    coalesce(u.sms_opt_in, false) as sms_consent,
    coalesce(u.push_opt_in, false) as push_consent,
    coalesce(u.email_opt_in and u.email is not null, false) as email_reachable,
    coalesce(u.sms_opt_in and u.phone is not null, false) as sms_reachable,
    coalesce(u.push_opt_in and u.push_token is not null, false) as push_reachable,
    f.top_category
from recsys.user_features as f
left join recsys.users as u on f.user_id = u.user_id
where
    f.as_of = %(as_of)s
    and (%(ids)s::bigint[] is null or f.user_id = any(%(ids)s::bigint[]))
    and (
        %(rate)s::float8 is null
        or (hashint8extended(f.user_id, %(seed)s::bigint) & 4294967295)::float8 / 4294967296.0 < %(rate)s::float8
    )
order by f.user_id
