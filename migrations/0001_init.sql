-- One schema for SQLite and PostgreSQL: text ids, integer epoch-ms times,
-- JSON as text, so the same statements run on both.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    ticket TEXT NOT NULL,
    severity TEXT NOT NULL,
    host TEXT NOT NULL,
    summary TEXT NOT NULL,
    variables TEXT NOT NULL,
    state TEXT NOT NULL,
    final TEXT,
    escalation TEXT,
    cancel_reason TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX notifications_contract_ticket ON notifications (contract, ticket);
CREATE INDEX notifications_state ON notifications (state);
CREATE INDEX notifications_created ON notifications (created_ms);

CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id),
    attempt BIGINT NOT NULL,
    contact TEXT NOT NULL,
    round BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    answered_ms BIGINT,
    ended_ms BIGINT,
    outcome TEXT,
    sip_code BIGINT,
    digits TEXT NOT NULL,
    UNIQUE (notification_id, attempt)
);

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    notification_id TEXT,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    delivered_ms BIGINT,
    tries BIGINT NOT NULL,
    next_try_ms BIGINT NOT NULL,
    last_error TEXT,
    gave_up BIGINT NOT NULL,
    UNIQUE (notification_id, seq)
);
CREATE INDEX outbox_due ON outbox (delivered_ms, gave_up, next_try_ms);
