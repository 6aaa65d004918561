select user_id from recsys.campaign_holdout
where campaign_date = %(night)s
