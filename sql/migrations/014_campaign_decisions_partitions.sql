-- 014: campaign_decisions partitioned by campaign date, as campaign_offers is (issue 14). A night
-- writes a million rows into it; scoring now fills a new day's partition as a bare table and
-- attaches it (one sorted build of its key instead of a million index inserts: docs/performance.md),
-- and retention drops a day's partition instead of deleting its rows.
--
-- The rows are kept: each campaign date already recorded gets its partition and its rows move
-- there. The views that read the table are dropped here and re-created by this same migrate run
-- (it re-applies every view and function file after applying a migration).

drop view if exists recsys.v_campaign_summary cascade;
drop view if exists recsys.v_logged_offers cascade;

alter table recsys.campaign_decisions rename to campaign_decisions_013;
alter index recsys.campaign_decisions_pkey rename to campaign_decisions_013_pkey;
alter index recsys.campaign_decisions_rest_idx rename to campaign_decisions_013_rest_idx;

create table recsys.campaign_decisions (
    campaign_date date not null,
    run_id text not null,
    user_id bigint not null,
    decision text not null check (decision in ('offer', 'rest', 'holdout', 'skipped')),
    action_id integer,
    propensity double precision check (propensity > 0 and propensity <= 1),
    is_exploration boolean not null default false,
    model_version text,
    features_date date not null,
    skip_reason text,
    segment text,
    created_at timestamptz not null default clock_timestamp(),
    primary key (campaign_date, user_id),
    constraint campaign_decisions_skip_check check (
        (decision = 'skipped' and skip_reason is not null and action_id is null and propensity is null)
        or (decision <> 'skipped' and skip_reason is null and action_id is not null and propensity is not null)
    )
) partition by range (campaign_date);

-- a million rows a night: one index besides the key, and a small one (the rests, which the campaign
-- summary reads per run); a night's decisions are read by campaign_date, the partition key
create index campaign_decisions_rest_idx on recsys.campaign_decisions (run_id) where decision = 'rest';

do $$
declare
    day date;
begin
    for day in select distinct d.campaign_date from recsys.campaign_decisions_013 as d order by 1 loop
        execute format(
            'create table recsys.%I partition of recsys.campaign_decisions for values from (%L) to (%L)',
            'campaign_decisions_' || to_char(day, 'YYYYMMDD'), day, day + 1
        );
        execute format(
            'comment on table recsys.%I is %L', 'campaign_decisions_' || to_char(day, 'YYYYMMDD'),
            'campaign_decisions of ' || day
        );
    end loop;
end;
$$;

insert into recsys.campaign_decisions (
    campaign_date, run_id, user_id, decision, action_id, propensity, is_exploration, model_version,
    features_date, skip_reason, segment, created_at
)
select
    campaign_date,
    run_id,
    user_id,
    decision,
    action_id,
    propensity,
    is_exploration,
    model_version,
    features_date,
    skip_reason,
    segment,
    created_at
from recsys.campaign_decisions_013
order by campaign_date, user_id;

drop table recsys.campaign_decisions_013;

comment on table recsys.campaign_decisions is
'Every user a campaign run scored, and what it decided: offer, rest (no offer tonight), holdout or '
'skipped; daily partitions by campaign_date. Senders read campaign_offers, which holds the offers only.';
comment on column recsys.campaign_decisions.campaign_date is 'The night.';
comment on column recsys.campaign_decisions.run_id is 'The run that (last) scored the user.';
comment on column recsys.campaign_decisions.user_id is 'The user.';
comment on column recsys.campaign_decisions.decision is
'offer (in campaign_offers), rest (the policy chose no offer: nothing sent), holdout (control group, '
'no offer; action_id is the would-be action, possibly the rest) or skipped (a hard rule: skip_reason).';
comment on column recsys.campaign_decisions.action_id is
'The chosen action in the run''s catalog (the rest is the last action id); for holdout the action the '
'policy would have chosen; null when skipped.';
comment on column recsys.campaign_decisions.propensity is
'Probability of action_id under the policy that chose it, exploration included (1 for holdout: the '
'greedy action is recorded); null when skipped.';
comment on column recsys.campaign_decisions.is_exploration is
'The action came from the exploration draw (the run''s explorer), not from the policy''s greedy choice.';
comment on column recsys.campaign_decisions.model_version is 'The policy that decided.';
comment on column recsys.campaign_decisions.features_date is 'as_of date of the features the policy read.';
comment on column recsys.campaign_decisions.skip_reason is
'Why a skipped user got nothing: no_consent, inactive, cooldown or frequency_cap; null otherwise.';
comment on column recsys.campaign_decisions.segment is 'The user''s behavioural segment when scored (null if unknown).';
comment on column recsys.campaign_decisions.created_at is 'When the row was written.';
