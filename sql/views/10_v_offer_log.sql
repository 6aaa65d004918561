-- Every logged offer decision and its outcome, without features: past campaigns from input files
-- (offer_history) and the system's own sent offers (campaign_offers with offer_events), the rows of
-- v_sent_offers (05_v_sent_offers.sql) whose outcome is final. Learning reads it through
-- v_logged_offers, which adds the features the system had when each decision was made. An own
-- offer appears once its attribution window (recsys.attribution_window()) has closed by the wall
-- clock, so its outcome is final when learning reads it: opened, clicked, converted and
-- unsubscribed say whether that event was reported within the window (a click or an unsubscribe
-- counts as an open: P(unsubscribe | open) learns from it),
-- revenue sums converted revenue within it. Past campaigns have no unsubscribe outcome (null).
-- The features of a date read v_sent_offers instead, by the date's clock (user_stats.sql).

create or replace view recsys.v_offer_log as
select *
from recsys.v_sent_offers
-- a past campaign's outcome is final as loaded; an own offer's once its window closed
where source = 'history' or sent_at + recsys.attribution_window() <= now();

comment on view recsys.v_offer_log is
'Every logged offer, past campaigns (source history) and the system''s own sent offers once their '
'attribution window closed (source campaign), with its propensity and outcome.';
