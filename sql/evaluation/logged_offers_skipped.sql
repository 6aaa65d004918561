-- logged decisions in the window off-policy evaluation cannot use: no features of the day, unknown propensity
select
    count(*) filter (where not v.has_features) as no_features,
    count(*) filter (where v.has_features and v.propensity is null) as no_propensity
from recsys.v_logged_offers as v
where
    (%(since)s::date is null or v.features_as_of >= %(since)s::date)
    and (%(until)s::date is null or v.features_as_of < %(until)s::date)
