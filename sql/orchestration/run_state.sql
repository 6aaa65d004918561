-- The state of a campaign run (null: no such run).
select state
from recsys.campaign_runs
where run_id = %(run_id)s
