-- Which process runs an action ("host:pid") and when it last said so: a
-- slot held by a process that died is freed without waiting for a restart
-- of the service.
ALTER TABLE action_runs ADD COLUMN owner TEXT;
ALTER TABLE action_runs ADD COLUMN heartbeat_ms BIGINT;
