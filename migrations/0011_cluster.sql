-- Several `callout serve` nodes on one PostgreSQL (`[cluster]`): which
-- node runs a notification (`owner`), until when (`lease_until_ms`, on the
-- database's clock, renewed by the owner's heartbeat) and the fencing
-- token (`epoch`, incremented at every claim) that every write of the
-- owner checks, so a node presumed dead cannot write or dial on work it
-- lost. SQLite (single node) keeps the defaults and never reads them.
ALTER TABLE notifications ADD COLUMN owner TEXT;
ALTER TABLE notifications ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX notifications_lease ON notifications (lease_until_ms);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
