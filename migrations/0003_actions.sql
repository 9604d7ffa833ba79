-- Maintenance action runs, and the terminal state `action_taken`.
DROP INDEX notifications_one_active;
CREATE UNIQUE INDEX notifications_one_active
    ON notifications (contract, ticket)
    WHERE state NOT IN ('acked', 'action_requested', 'action_taken', 'exhausted', 'cancelled');

CREATE TABLE action_runs (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    action TEXT NOT NULL,
    flow TEXT NOT NULL,
    host TEXT NOT NULL,
    notification_id TEXT,
    ticket TEXT,
    requested_by TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX action_runs_contract ON action_runs (contract, started_ms);
-- One run at a time per contract, host and flow, across processes too.
CREATE UNIQUE INDEX action_runs_one_running
    ON action_runs (contract, host, flow)
    WHERE state = 'running';
