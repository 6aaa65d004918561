-- logged decisions usable for off-policy evaluation (the day's features and a known propensity) with
-- since <= features_as_of < until (null: open), with the users' current consent and reachability;
-- columns is the list of the view's decision, outcome and feature columns composed by the caller
select
    {columns},
    coalesce(u.email_opt_in, false) as email_consent,
    coalesce(u.sms_opt_in, false) as sms_consent,
    coalesce(u.push_opt_in, false) as push_consent,
    coalesce(u.email_opt_in and u.email is not null, false) as email_ok,
    coalesce(u.sms_opt_in and u.phone is not null, false) as sms_ok,
    coalesce(u.push_opt_in and u.push_token is not null, false) as push_ok
from recsys.v_logged_offers as v
left join recsys.user_features as f on v.features_as_of = f.as_of and v.user_id = f.user_id
left join recsys.users as u on v.user_id = u.user_id
where
    v.has_features
    and v.propensity is not null
    and (%(since)s::date is null or v.features_as_of >= %(since)s::date)
    and (%(until)s::date is null or v.features_as_of < %(until)s::date)
order by v.features_as_of, v.offer_id
