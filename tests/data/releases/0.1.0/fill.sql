-- Data a 0.1.0 database holds: a load, users, behaviour, past campaigns, a registered champion, a
-- published campaign run whose offers are in every state a sender leaves them in, their outcomes,
-- a holdout and an unsubscribe. Written against the 0.1.0 schema only; frozen with it.
-- Dates are relative to the moment the test runs, so tonight's offers are due.

insert into recsys.load_log (source_path, file_name, file_sha256, file_bytes, status, reference_at, rows_read, rows_loaded)
values ('inbox/shop.xlsx', 'shop.xlsx', repeat('a', 64), 1000, 'loaded', now(), 8, 8);

insert into recsys.users (user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, timezone, first_name, load_id)
values
    (1, true, false, false, 'ann@example.com', null, null, 'Europe/Berlin', 'Ann', 1),
    (2, true, true, false, 'bob@example.com', '+15550100', null, 'America/Los_Angeles', 'Bob', 1),
    (3, true, false, true, 'cy@example.com', null, 'tok-3', 'UTC', null, 1),
    (4, true, false, false, 'di@example.com', null, null, 'Asia/Tokyo', 'Di', 1);

select recsys.ensure_event_partitions(now() - interval '40 days', now());

insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, product_category, channel, amount, discount_used, load_id)
values
    ('e1', 1, 's1', now() - interval '30 days', 'view', 'shoes', 'email', null, null, 1),
    ('e2', 1, 's1', now() - interval '30 days' + interval '5 minutes', 'purchase', 'shoes', 'email', 80, true, 1),
    ('e3', 2, 's2', now() - interval '20 days', 'view', 'books', 'web', null, null, 1),
    ('e4', 2, 's2', now() - interval '20 days' + interval '2 minutes', 'add_to_cart', 'books', 'web', null, null, 1),
    ('e5', 3, 's3', now() - interval '10 days', 'view', 'toys', 'push', null, null, 1),
    ('e6', 3, 's3', now() - interval '10 days' + interval '9 minutes', 'purchase', 'toys', 'push', 25, false, 1),
    ('e7', 4, 's4', now() - interval '3 days', 'view', 'shoes', 'app', null, null, 1),
    ('e8', 4, 's4', now() - interval '2 days', 'purchase', 'shoes', 'app', 60, false, 1);

insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel, timing, propensity, opened, clicked, converted, revenue, load_id)
values
    ('h1', 1, now() - interval '25 days', 'discount', 10, 'email', 'immediate', 0.1, true, true, true, 40, 1),
    ('h2', 2, now() - interval '15 days', 'free_shipping', 5, 'sms', 'delay_1hour', 0.2, true, false, false, null, 1);

insert into recsys.policy_models (
    model_version, algorithm, training_mode, hyperparameters, seed, catalog_fingerprint, feature_fingerprint,
    catalog, trained_on, total_timesteps, gate_decision, is_champion, artifact, artifact_sha256
)
values (
    'm-010', 'ppo', 'retrain', '{"gamma": 0.5}', 7, 'cat-0.1.0', 'feat-0.1.0',
    '{"actions": []}', current_date - 1, 60000, 'bootstrap', true, '\x00'::bytea, repeat('0', 64)
);

insert into recsys.campaign_runs (run_id, campaign_date, model_version, state, features_as_of, published_at, finished_at)
values ('night-1', current_date, 'm-010', 'published', current_date, now() - interval '2 hours', now() - interval '2 hours');

select recsys.ensure_campaign_partition(current_date);

insert into recsys.campaign_offers (
    offer_id, run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, product_category,
    channel, timing, scheduled_at, expires_at, status, attempts, claimed_by, claimed_at, lease_until, sent_at,
    subject, body, model_version, propensity, is_exploration, features_as_of, segment
)
values
    -- due and never claimed
    (101, 'night-1', current_date, 1, 3, 'discount', 10, 'percent', null, 'email', 'immediate',
     now() - interval '1 hour', now() + interval '1 day', 'scheduled', 0, null, null, null, null,
     'Ann, 10% off', '<p>Hi Ann</p>', 'm-010', 0.9, false, current_date, 'loyal'),
    -- claimed by a sender that died: its lease has run out
    (102, 'night-1', current_date, 2, 7, 'free_shipping', 5, 'currency', null, 'email', 'immediate',
     now() - interval '1 hour', now() + interval '1 day', 'claimed', 1, 'old-worker', now() - interval '50 minutes',
     now() - interval '40 minutes', null, 'Bob, free shipping', '<p>Hi Bob</p>', 'm-010', 0.05, true, current_date, 'new'),
    -- sent, delivered and opened
    (103, 'night-1', current_date, 3, 11, 'recommendation', 0, 'none', 'toys', 'email', 'immediate',
     now() - interval '1 hour', now() + interval '1 day', 'sent', 1, 'old-worker', now() - interval '55 minutes',
     now() - interval '50 minutes', now() - interval '54 minutes', 'Toys for you', '<p>Hi there</p>', 'm-010', 0.9,
     false, current_date, 'loyal');

select setval('recsys.campaign_offer_id_seq', 103);

insert into recsys.offer_events (offer_id, event, event_at)
values (103, 'delivered', now() - interval '53 minutes'), (103, 'opened', now() - interval '30 minutes');

insert into recsys.campaign_holdout (run_id, campaign_date, user_id, action_id, offer_type, offer_value, channel, timing, model_version, features_as_of, segment)
values ('night-1', current_date, 4, 3, 'discount', 10, 'email', 'immediate', 'm-010', current_date, 'loyal');

insert into recsys.consent_revocations (user_id, channel, revoked_at, offer_id)
values (2, 'sms', now() - interval '5 days', null);
