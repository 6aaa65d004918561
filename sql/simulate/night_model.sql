-- the model that chose the night's offers, and how it was trained
select
    r.model_version,
    m.training_mode
from recsys.campaign_runs as r
left join recsys.policy_models as m on r.model_version = m.model_version
where r.campaign_date = %(night)s and r.state = 'published'
order by r.published_at desc
limit 1
