-- The alert pipeline: every accepted alert (durable before the sender's
-- 2xx or 250), incidents with their ticket numbers, each incident's
-- ordered timeline, per-contract ticket counters, silences, heartbeats
-- and the raw alert mails.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    severity TEXT NOT NULL,
    body TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    incident_id TEXT,
    disposition TEXT,
    handled_ms BIGINT
);
CREATE INDEX alerts_unhandled ON alerts (id) WHERE handled_ms IS NULL;
CREATE INDEX alerts_incident ON alerts (incident_id);
CREATE INDEX alerts_contract ON alerts (contract, received_ms);

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    notify_contract TEXT,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    ticket TEXT,
    opened_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    closed_ms BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX incidents_open ON incidents (state);
CREATE INDEX incidents_contract ON incidents (contract, opened_ms);
CREATE INDEX incidents_ticket ON incidents (ticket);

CREATE TABLE incident_timeline (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    alert_id TEXT,
    data TEXT
);
CREATE INDEX incident_timeline_order ON incident_timeline (incident_id, seq);

CREATE TABLE ticket_counters (
    prefix TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);

CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    ends_ms BIGINT NOT NULL,
    deleted_ms BIGINT,
    body TEXT NOT NULL
);

CREATE TABLE heartbeats (
    contract TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (contract, name)
);

CREATE TABLE mails (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    subject TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    alert_id TEXT,
    reason TEXT
);
CREATE INDEX mails_contract ON mails (contract, received_ms);
