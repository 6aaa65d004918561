alter table recsys.campaign_offers attach partition {part} for values from (%(lo)s) to (%(hi)s)
