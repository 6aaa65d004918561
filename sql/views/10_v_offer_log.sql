-- Every logged offer decision and its outcome, without features: past campaigns from input files
-- now; the system's own campaign offers join this view when campaigns exist. Features read it for
-- contact history; v_logged_offers adds the features the system had when each decision was made.

create or replace view recsys.v_offer_log as
with history as (
    select
        h.offer_id,
        'history'::text as source,
        h.user_id,
        h.sent_at,
        (h.sent_at at time zone 'UTC')::date as features_as_of,
        h.offer_type,
        h.offer_value,
        h.channel,
        h.timing,
        h.propensity,
        h.opened,
        h.clicked,
        h.converted,
        h.revenue
    from recsys.offer_history as h
),

final as (
    select * from history
)

select * from final;

comment on view recsys.v_offer_log is
'Every logged offer (past campaigns; later the system''s own) with its propensity and outcome.';
