select count(*) from recsys.campaign_offers
where run_id = %(run_id)s and campaign_date = %(day)s
