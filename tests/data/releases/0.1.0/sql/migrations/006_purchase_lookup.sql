-- 006: a lookup of one user's purchases in a time range, for the lift in v_campaign_summary (did
-- this treated or held-out user buy within the attribution window after the campaign date?).
-- Partial: purchases are a small share of behaviour, so the index stays small and loads barely
-- notice it. Created on the partitioned table, so every monthly partition gets one.

create index behavior_events_purchase_user_idx on recsys.behavior_events (user_id, event_at)
where action = 'purchase';

comment on index recsys.behavior_events_purchase_user_idx is
'Purchases by user and time: the attribution-window lookups of v_campaign_summary.';
