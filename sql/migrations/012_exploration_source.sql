-- 012: exploration that earns information (issue 12). An explored offer is now drawn from the
-- configured explorer ([campaign] explorer: the newest challenger's softened probabilities with a
-- uniform floor, or uniform), and a run's settings record which policy it explored with. Comments
-- only: no table or data changes.

comment on column recsys.campaign_offers.is_exploration is
'The offer came from the exploration draw (a hash of salt, date and user below exploration_share), '
'not from the policy''s greedy choice: drawn from the explorer of the run (campaign_runs.settings '
'explorer and exploration_source: the newest challenger''s softened probabilities with a uniform '
'floor, or uniform over the allowed actions). An explored offer may equal the greedy one.';

comment on column recsys.campaign_offers.propensity is
'Exact probability with which this offer was chosen: (1 - exploration_share) x [greedy offer] + '
'exploration_share x the explorer''s probability of it.';

comment on column recsys.campaign_runs.settings is
'The campaign rules in force: holdout and exploration shares, salts, explorer (kind, temperature, '
'floor) and exploration_source (the model version explored with, or uniform), caps, quiet hours, '
'send time.';
