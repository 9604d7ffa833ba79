-- The PIN lockout of each contract, held in the database so that it holds
-- across calls, notifications and restarts (and across service instances
-- on one PostgreSQL). `version` is bumped by every write: writers update
-- only the version they read, so two calls failing at once both count.
CREATE TABLE pin_locks (
    contract TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    since_ms BIGINT,
    last_failure_ms BIGINT,
    locked_until_ms BIGINT,
    locked_at_ms BIGINT,
    version BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- Every wrong PIN, by contact: who failed, on which call; and whether an
-- operator has since cleared the lock it counted towards.
CREATE TABLE pin_failures (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    contact TEXT NOT NULL,
    notification_id TEXT,
    attempt BIGINT,
    at_ms BIGINT NOT NULL,
    cleared_ms BIGINT,
    cleared_by TEXT
);
CREATE INDEX pin_failures_contract ON pin_failures (contract, at_ms);
