-- 011: every scored user's decision (issue 13). A night's run records, per user it loaded, what it
-- decided: an offer (the row senders see stays in campaign_offers), a rest (the policy chose no
-- offer tonight: nothing is sent, reward 0), the holdout (the control group: no offer, with the
-- action the policy would have chosen, which may be the rest), or skipped by a hard rule (consent,
-- activity, cooldown, frequency cap: never a rest). Written by scoring in the run's transaction,
-- replaced by a re-run of the same date and shard. No existing data changes.
--
-- is_exploration means here what it means in campaign_offers (012 describes the explorer): the
-- action came from the exploration draw (a hash of the exploration salt, the date and the user chose
-- it), not from the policy's greedy choice; the propensity is the action's exact probability under
-- the run's mixture of the two either way.

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
);

-- a million rows a night: one index besides the key, and a small one (the rests, which the campaign
-- summary reads per run); a night's decisions are read by campaign_date, the key's prefix
create index campaign_decisions_rest_idx on recsys.campaign_decisions (run_id) where decision = 'rest';

comment on table recsys.campaign_decisions is
'Every user a campaign run scored, and what it decided: offer, rest (no offer tonight), holdout or '
'skipped. Senders read campaign_offers, which holds the offers only.';
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
