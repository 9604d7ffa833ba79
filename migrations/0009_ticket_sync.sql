-- External tickets (Redmine): per incident, the issue it has there and
-- how far its timeline has been written to it. The timeline is the
-- outbox; `cursor_seq` (the last timeline seq the ticket accepted) only
-- moves after the ticket system said yes.
CREATE TABLE ticket_sync (
    incident_id TEXT PRIMARY KEY,
    system TEXT NOT NULL,
    server TEXT NOT NULL,
    issue TEXT,
    -- The embedded number the incident held before the issue existed
    -- (the gateway may still name the incident by it).
    old_ticket TEXT,
    cursor_seq BIGINT NOT NULL,
    -- The ticket was closed (by callout or by a person): nothing more to do.
    done_ms BIGINT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX ticket_sync_open ON ticket_sync (done_ms);
CREATE INDEX ticket_sync_old ON ticket_sync (old_ticket);
