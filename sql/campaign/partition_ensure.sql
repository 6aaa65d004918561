select recsys.ensure_campaign_partition(%(day)s)
