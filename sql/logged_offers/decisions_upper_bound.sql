-- An upper bound, from the base tables alone, of the decisions recsys.v_logged_offers holds with
-- decided_from <= features_as_of < decided_before (each null: open): every past-campaign offer,
-- every sent offer of the system's own (also those whose attribution window is still open) and
-- every rest (also of runs not published). Off-policy evaluation sizes its sample with it
-- (recsys.evaluation.ope.load_logged_sample); the view's own count costs a pass over its joins.
select
    (
        select count(*)
        from recsys.offer_history as h
        where
            (
                %(decided_from)s::date is null
                or h.sent_at >= %(decided_from)s::date::timestamp at time zone 'UTC'
            )
            and (
                %(decided_before)s::date is null
                or h.sent_at < %(decided_before)s::date::timestamp at time zone 'UTC'
            )
    )
    + (
        select count(*)
        from recsys.campaign_offers as o
        where
            o.status = 'sent'
            and (%(decided_from)s::date is null or o.features_as_of >= %(decided_from)s::date)
            and (%(decided_before)s::date is null or o.features_as_of < %(decided_before)s::date)
    )
    + (
        select count(*)
        from recsys.campaign_decisions as d
        where
            d.decision = 'rest'
            and (%(decided_from)s::date is null or d.features_date >= %(decided_from)s::date)
            and (%(decided_before)s::date is null or d.features_date < %(decided_before)s::date)
    ) as decisions
