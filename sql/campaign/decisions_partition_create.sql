-- a standalone table shaped like a campaign_decisions partition; the check equals the partition bound
-- exempt from the linter's parser on the next line: it reads no "including compression"
create table {part} (  -- noqa: PRS
    like recsys.campaign_decisions including defaults including constraints including storage including compression,
    constraint {check_name} check (campaign_date >= %(lo)s::date and campaign_date < %(hi)s::date)
)
