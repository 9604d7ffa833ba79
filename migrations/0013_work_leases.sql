-- Work that one node at a time carries out for the whole database when
-- several `callout serve` nodes share one PostgreSQL (`[cluster]`): the
-- alert pipeline's engine, the customer mail outbox and the ticket sync.
-- Each is a named lease (`owner`, `lease_until_ms` on the database's
-- clock, `epoch` = fencing token, +1 at every claim) that every write of
-- that work checks in its own transaction. SQLite (single node) never
-- reads these tables.
CREATE TABLE work_leases (
    name TEXT PRIMARY KEY,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);

-- What a node that does not run the pipeline received for it (a
-- gateway's outcome webhook, an operator's close, a silence): the node
-- that runs it reads and deletes each row in the step that handles it.
CREATE TABLE pipeline_inbox (
    id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
