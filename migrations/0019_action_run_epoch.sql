-- Clustered, a run asked for from a call belongs to its notification's
-- lease: the epoch it was started under. Its start and its record are
-- written only while that epoch still holds the notification, and a node
-- that took the notification over can tell a slot held by a lost lease.
ALTER TABLE action_runs ADD COLUMN epoch BIGINT;
