-- The attribution window of offers: an outcome counts towards an offer when it comes within this
-- long after the offer (sent_at, or the campaign date 00:00 UTC for lift), and the offer's own log
-- row appears in v_offer_log only once the window has closed. Its length in days is the setting
-- recsys.attribution_days, which `recsys db migrate` stores on the database from
-- Settings.attribution_days (RECSYS_ATTRIBUTION_DAYS, default 3); without it, 3 days. A session can
-- override it (set recsys.attribution_days = 7) to look at the views with another window.

create or replace function recsys.attribution_window()
returns interval
language sql
stable
parallel safe
as $$
    select make_interval(days => coalesce(nullif(current_setting('recsys.attribution_days', true), '')::integer, 3))
$$;

comment on function recsys.attribution_window() is
'Attribution window of offers used by the views: recsys.attribution_days days (stored on the database '
'by recsys db migrate from RECSYS_ATTRIBUTION_DAYS), 3 when unset.';
