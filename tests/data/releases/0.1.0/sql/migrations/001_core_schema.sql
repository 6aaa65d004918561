-- 001: the data foundation: loads, behaviour, users, past campaigns, features.
-- Applied once by `recsys db migrate`; never edit after it shipped: add a new numbered file.

create schema if not exists recsys;
comment on schema recsys is 'Offer engine: behaviour, features, models, campaigns and the sender protocol.';

-- Loads -----------------------------------------------------------------------------------------

create table recsys.load_log (
    load_id bigint generated always as identity primary key,
    source_path text not null,
    file_name text not null,
    file_sha256 text not null,
    file_bytes bigint not null,
    status text not null check (status in ('loading', 'loaded', 'refused')),
    reference_at timestamptz not null,
    rows_read bigint not null default 0,
    rows_loaded bigint not null default 0,
    rows_rejected bigint not null default 0,
    rows_duplicate bigint not null default 0,
    sheet_counts jsonb not null default '{}'::jsonb,
    message text,
    started_at timestamptz not null default clock_timestamp(),
    finished_at timestamptz
);
create index load_log_sha256_idx on recsys.load_log (file_sha256, status);
comment on table recsys.load_log is 'One row per input file load attempt: what was read, loaded, rejected.';
comment on column recsys.load_log.load_id is 'Identifier of the load; events, users and rejects point back to it.';
comment on column recsys.load_log.source_path is 'Path of the file as given to the loader.';
comment on column recsys.load_log.file_name is 'File name without folders.';
comment on column recsys.load_log.file_sha256 is 'sha256 of the file bytes: a file is known by this, never loaded twice.';
comment on column recsys.load_log.file_bytes is 'File size in bytes.';
comment on column recsys.load_log.status is 'loaded: committed; refused: the file could not be read, nothing of it was loaded.';
comment on column recsys.load_log.reference_at is 'Timestamps later than this were rejected as in the future.';
comment on column recsys.load_log.rows_read is 'Data rows read from the file, all sheets.';
comment on column recsys.load_log.rows_loaded is 'Rows inserted or updated.';
comment on column recsys.load_log.rows_rejected is 'Rows rejected (details in load_rejects).';
comment on column recsys.load_log.rows_duplicate is 'Valid rows already present (same event_id / offer_id), not added again.';
comment on column recsys.load_log.sheet_counts is 'Per sheet (events/users/offers): read, loaded, rejected, duplicate.';
comment on column recsys.load_log.message is 'Why a file was refused, or a note on the load.';
comment on column recsys.load_log.started_at is 'When the load started.';
comment on column recsys.load_log.finished_at is 'When the load committed or was refused.';

create table recsys.load_rejects (
    reject_id bigint generated always as identity primary key,
    load_id bigint not null references recsys.load_log (load_id) on delete cascade,
    file_name text not null,
    sheet text not null,
    row_number bigint not null,
    column_name text,
    value text,
    reason text not null,
    rejected_at timestamptz not null default clock_timestamp()
);
create index load_rejects_load_idx on recsys.load_rejects (load_id, row_number);
comment on table recsys.load_rejects is 'Input rows that were not loaded, one row per problem found.';
comment on column recsys.load_rejects.reject_id is 'Identifier of the reject.';
comment on column recsys.load_rejects.load_id is 'The load (load_log) the row came in.';
comment on column recsys.load_rejects.file_name is 'File the row came from.';
comment on column recsys.load_rejects.sheet is 'events, users or offers.';
comment on column recsys.load_rejects.row_number is 'Row in the file or sheet as a spreadsheet shows it (the header is row 1).';
comment on column recsys.load_rejects.column_name is 'Column that failed validation (lower case), if one did.';
comment on column recsys.load_rejects.value is 'The offending value as read (truncated to 200 characters).';
comment on column recsys.load_rejects.reason is 'What was wrong.';
comment on column recsys.load_rejects.rejected_at is 'When the row was rejected.';

-- Behaviour -------------------------------------------------------------------------------------

create table recsys.behavior_events (
    event_id text not null,
    user_id bigint not null,
    session_id text not null,
    event_at timestamptz not null,
    action text not null check (action in ('view', 'add_to_cart', 'purchase')),
    product_category text,
    channel text,
    amount numeric(14, 2) check (amount >= 0),
    discount_used boolean,
    free_shipping_used boolean,
    load_id bigint not null,
    constraint behavior_events_purchase_amount check (action <> 'purchase' or amount is not null),
    primary key (event_at, event_id)
) partition by range (event_at);
comment on table recsys.behavior_events is 'User behaviour: views, add-to-carts and purchases; monthly partitions by event_at.';
comment on column recsys.behavior_events.event_id is 'Unique id: from the input, or derived from the row content and its occurrence in the file.';
comment on column recsys.behavior_events.user_id is 'The user.';
comment on column recsys.behavior_events.session_id is 'The session the event belongs to.';
comment on column recsys.behavior_events.event_at is 'When it happened (UTC).';
comment on column recsys.behavior_events.action is 'view, add_to_cart or purchase.';
comment on column recsys.behavior_events.product_category is 'Category of the product involved, if known.';
comment on column recsys.behavior_events.channel is 'What brought the session: email, sms, push, web, app or other text.';
comment on column recsys.behavior_events.amount is 'Order value of a purchase (shop currency); null for other actions.';
comment on column recsys.behavior_events.discount_used is 'The purchase used a discount.';
comment on column recsys.behavior_events.free_shipping_used is 'The purchase used free shipping.';
comment on column recsys.behavior_events.load_id is 'The load that added the event.';

create table recsys.users (
    user_id bigint primary key,
    email_opt_in boolean not null default false,
    sms_opt_in boolean not null default false,
    push_opt_in boolean not null default false,
    email text,
    phone text,
    push_token text,
    timezone text not null default 'UTC',
    first_name text,
    updated_at timestamptz,
    load_id bigint not null,
    loaded_at timestamptz not null default clock_timestamp()
);
comment on table recsys.users is 'Users: consent per channel, addresses and timezone. No row means no consent on any channel.';
comment on column recsys.users.user_id is 'The user.';
comment on column recsys.users.email_opt_in is 'Consent to email offers (as given by the latest users row).';
comment on column recsys.users.sms_opt_in is 'Consent to sms offers (as given by the latest users row).';
comment on column recsys.users.push_opt_in is 'Consent to push offers (as given by the latest users row).';
comment on column recsys.users.email is 'Email address.';
comment on column recsys.users.phone is 'Phone number for sms.';
comment on column recsys.users.push_token is 'Device token for push.';
comment on column recsys.users.timezone is 'IANA time zone name; send times are local to it.';
comment on column recsys.users.first_name is 'First name, for message templates.';
comment on column recsys.users.updated_at is 'updated_at of the input row that set these values, if it had one.';
comment on column recsys.users.load_id is 'The load that last set this row.';
comment on column recsys.users.loaded_at is 'When this row was last set.';

-- Past campaigns from input files ---------------------------------------------------------------

create table recsys.offer_history (
    offer_id text primary key,
    user_id bigint not null,
    sent_at timestamptz not null,
    offer_type text not null check (offer_type in ('discount', 'free_shipping', 'recommendation', 'bundle')),
    offer_value numeric(12, 2) not null check (offer_value > 0),
    channel text not null check (channel in ('email', 'sms', 'push')),
    timing text not null check (timing in ('immediate', 'delay_1hour', 'delay_6hours')),
    propensity double precision check (propensity > 0 and propensity <= 1),
    opened boolean,
    clicked boolean,
    converted boolean,
    revenue numeric(14, 2) check (revenue >= 0),
    load_id bigint not null
);
create index offer_history_user_idx on recsys.offer_history (user_id, sent_at);
create index offer_history_sent_idx on recsys.offer_history (sent_at);
comment on table recsys.offer_history is 'Past offers from input files (the offers sheet), kept apart from the system''s own.';
comment on column recsys.offer_history.offer_id is 'Unique id of the past offer, as given.';
comment on column recsys.offer_history.user_id is 'Who received it.';
comment on column recsys.offer_history.sent_at is 'When it was sent (UTC).';
comment on column recsys.offer_history.offer_type is 'discount, free_shipping, recommendation or bundle.';
comment on column recsys.offer_history.offer_value is 'Offer value; its unit per offer type is in the catalog.';
comment on column recsys.offer_history.channel is 'email, sms or push.';
comment on column recsys.offer_history.timing is 'immediate, delay_1hour or delay_6hours.';
comment on column recsys.offer_history.propensity is 'Probability the logging policy gave this offer; null = unknown.';
comment on column recsys.offer_history.opened is 'Opened within the attribution window (null = unknown).';
comment on column recsys.offer_history.clicked is 'Clicked within the attribution window (null = unknown).';
comment on column recsys.offer_history.converted is 'Converted within the attribution window (null = unknown).';
comment on column recsys.offer_history.revenue is 'Revenue attributed to the offer.';
comment on column recsys.offer_history.load_id is 'The load that last set this row.';

-- Features --------------------------------------------------------------------------------------

create table recsys.user_features (
    as_of date not null,
    user_id bigint not null,
    recency_days double precision not null,
    frequency_sessions integer not null,
    monetary_value double precision not null,
    engagement_score double precision not null,
    discount_sensitivity double precision not null,
    free_shipping_preference double precision not null,
    email_responsiveness double precision not null,
    sms_responsiveness double precision not null,
    push_responsiveness double precision not null,
    days_since_last_purchase double precision not null,
    purchase_count integer not null,
    offers_last_7d integer not null,
    days_since_last_offer double precision not null,
    top_category text not null,
    r_score smallint not null,
    f_score smallint not null,
    m_score smallint not null,
    segment text not null,
    primary key (as_of, user_id)
) partition by list (as_of);
comment on table recsys.user_features is 'Per-user state features as of a date (events before as_of 00:00 UTC only); one partition per as_of.';
comment on column recsys.user_features.as_of is 'Features use events with timestamp < as_of 00:00 UTC.';
comment on column recsys.user_features.user_id is 'The user (every user with an event in the recency cap window before as_of).';
comment on column recsys.user_features.recency_days is 'Days since the last event of any kind, capped at the recency cap (default 365).';
comment on column recsys.user_features.frequency_sessions is 'Distinct sessions in the feature window (default 90 days).';
comment on column recsys.user_features.monetary_value is 'Sum of purchase amounts in the feature window, >= 0.';
comment on column recsys.user_features.engagement_score is '1 - exp(-(views + 3 add_to_carts + 10 purchases) / 25) in the window: 0 = none, towards 1 = very engaged.';
comment on column recsys.user_features.discount_sensitivity is 'Share of purchases in the window that used a discount, Laplace-smoothed: (d + 1) / (n + 2); 0.5 with no purchase.';
comment on column recsys.user_features.free_shipping_preference is 'Share of purchases in the window that used free shipping, Laplace-smoothed: (f + 1) / (n + 2).';
comment on column recsys.user_features.email_responsiveness is 'Response rate to email: session share of email as prior, updated by clicks on past email offers; in (0, 1).';
comment on column recsys.user_features.sms_responsiveness is 'Response rate to sms, defined as email_responsiveness; in (0, 1).';
comment on column recsys.user_features.push_responsiveness is 'Response rate to push, defined as email_responsiveness; in (0, 1).';
comment on column recsys.user_features.days_since_last_purchase is 'Days since the last purchase, capped at the recency cap; the cap when there was none.';
comment on column recsys.user_features.purchase_count is 'Purchases in the feature window.';
comment on column recsys.user_features.offers_last_7d is 'Offers sent to the user in the 7 days before as_of.';
comment on column recsys.user_features.days_since_last_offer is 'Days since the last offer sent, capped at the recency cap; the cap when there was none.';
comment on column recsys.user_features.top_category is 'Most viewed or bought product category in the window (''unknown'' when none).';
comment on column recsys.user_features.r_score is 'Recency quintile among users as of the date: 5 = most recent.';
comment on column recsys.user_features.f_score is 'Frequency quintile: 5 = most sessions.';
comment on column recsys.user_features.m_score is 'Monetary quintile among users: 5 = highest spend; 1 for users with no spend.';
comment on column recsys.user_features.segment is 'Behavioural RFM segment: champion, loyal, promising, new, at_risk, hibernating, browser or dormant.';
