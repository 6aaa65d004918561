alter table recsys.campaign_decisions attach partition {part} for values from (%(lo)s) to (%(hi)s)
