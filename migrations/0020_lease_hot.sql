-- Lease renewals as HOT updates (PostgreSQL, `[cluster]`): a renewal
-- rewrites `lease_until_ms` of every unfinished notification a node holds,
-- every heartbeat. While that column was indexed no such update could be
-- heap-only, so each one inserted into every index of the table (28 % of
-- PostgreSQL's CPU in the accept benchmark, session 10). The claim of
-- expired work reads the unfinished rows through the partial unique index
-- `notifications_one_active` (same predicate as `ended!`), which stays
-- small. On PostgreSQL `Store::connect` also gives the table free space per
-- page (fillfactor) so the new row version fits beside the old one.
DROP INDEX IF EXISTS notifications_lease;
