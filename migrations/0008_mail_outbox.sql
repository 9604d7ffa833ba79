-- E-mail notices to customers: queued in the same commit as the incident
-- step that causes them, sent by the outbox task, retried with backoff
-- while the relay is down or answers 4xx, given up on a 5xx.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    contract TEXT NOT NULL,
    event TEXT NOT NULL,
    notice TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    done_ms BIGINT,
    last_error TEXT,
    message_id TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_ms) WHERE state = 'queued';
CREATE INDEX mail_outbox_incident ON mail_outbox (incident_id, done_ms);
