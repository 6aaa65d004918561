-- Insert the valid staged feedback rows into offer_events, as record_offer_event does: once per
-- (offer, event), the first report wins (an earlier load, else the file's first row). A new
-- unsubscribe revokes the channel's consent: consent_revocations, and the users row's opt-in set
-- to false unless that row is newer than the unsubscribe; a new bounce suppresses the address
-- (address_suppressions). Returns the number of events added.

with firsts as (
    select distinct on (offer_id_v, event) *
    from pg_temp.feedback_checked
    where not is_rejected
    order by offer_id_v asc, event asc, row_number asc
),

inserted as (
    insert into recsys.offer_events (offer_id, event, event_at, revenue, source)
    select
        f.offer_id_v,
        f.event,
        f.event_at_v,
        round(f.revenue_v, 2) as revenue,
        'feedback' as source
    from firsts as f
    on conflict (offer_id, event) do nothing
    returning offer_id, event, event_at
),

unsubscribes as (
    select distinct on (i.offer_id)
        i.offer_id,
        i.event_at,
        o.user_id,
        o.channel
    from inserted as i
    inner join recsys.campaign_offers as o on i.offer_id = o.offer_id
    where i.event = 'unsubscribed'
),

revoked as (
    insert into recsys.consent_revocations (user_id, channel, revoked_at, offer_id)
    select
        user_id,
        channel,
        event_at,
        offer_id
    from unsubscribes
    on conflict do nothing
    returning 1
),

per_user as (
    select
        user_id,
        max(event_at) filter (where channel = 'email') as email_at,
        max(event_at) filter (where channel = 'sms') as sms_at,
        max(event_at) filter (where channel = 'push') as push_at,
        max(event_at) as last_at
    from unsubscribes
    group by user_id
),

users_revoked as (
    update recsys.users as u
    set
        email_opt_in = case
            when u.updated_at <= p.email_at or (u.updated_at is null and p.email_at is not null)
                then false
            else u.email_opt_in
        end,
        sms_opt_in = case
            when u.updated_at <= p.sms_at or (u.updated_at is null and p.sms_at is not null)
                then false
            else u.sms_opt_in
        end,
        push_opt_in = case
            when u.updated_at <= p.push_at or (u.updated_at is null and p.push_at is not null)
                then false
            else u.push_opt_in
        end,
        updated_at = greatest(u.updated_at, p.last_at)
    from per_user as p
    where u.user_id = p.user_id
    returning 1
),

-- a new bounce suppresses the address the offer went to (the user's present one when the offer
-- was marked sent without a claim), as record_offer_event does
bounces as (
    select distinct on (a.channel, a.address)
        a.channel,
        a.address,
        i.offer_id,
        o.user_id,
        i.event_at
    from inserted as i
    inner join recsys.campaign_offers as o on i.offer_id = o.offer_id
    left join recsys.users as u on o.user_id = u.user_id
    cross join
        lateral (
            select
                o.channel,
                recsys.normalized_address(
                    o.channel,
                    coalesce(
                        o.claimed_address,
                        case o.channel when 'email' then u.email when 'sms' then u.phone else u.push_token end
                    )
                ) as address
        ) as a
    where i.event = 'bounced' and a.address is not null
    order by a.channel asc, a.address asc, i.event_at asc
),

suppressed as (
    insert into recsys.address_suppressions (channel, address, reason, offer_id, user_id, suppressed_at)
    select
        channel,
        address,
        'bounced' as reason,
        offer_id,
        user_id,
        event_at
    from bounces
    on conflict (channel, address) do nothing
    returning 1
),

final as (
    select
        (select count(*) from inserted) as events_added,
        (select count(*) from revoked) as consents_revoked,
        (select count(*) from users_revoked) as users_updated,
        (select count(*) from suppressed) as addresses_suppressed
)

select events_added from final
