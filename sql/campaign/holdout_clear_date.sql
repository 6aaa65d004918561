delete from recsys.campaign_holdout
where campaign_date = %(day)s
