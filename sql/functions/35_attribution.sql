-- The attribution window of offers, for views: an outcome counts towards an offer when it comes
-- within this long after the offer (sent_at, or the campaign date 00:00 UTC for lift), and the
-- offer's own log row appears in v_offer_log only once the window has closed. Keep equal to
-- Settings.attribution_days (RECSYS_ATTRIBUTION_DAYS, default 3): views cannot read settings.

create or replace function recsys.attribution_window()
returns interval
language sql
immutable
parallel safe
as $$
    select interval '3 days'
$$;

comment on function recsys.attribution_window() is
'Attribution window of offers used by the views (3 days, as Settings.attribution_days defaults to).';
