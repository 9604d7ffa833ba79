-- Covering indexes for the report facts (issue 14): a year of a centre
-- is read as one scan of a facts index, never a lookup of the table row
-- per index entry.
--
-- Why: SQLite has no statistics, so for `created_ms BETWEEN ..` it takes
-- the created_ms index whatever the range; over a whole year that was an
-- index walk plus a table lookup per row (slower than scanning the
-- table). With every column a report reads in the index, the same walk
-- reads the index only. The contact index leads with the contact, so the
-- `by contact` report (a row per notification and contact called, about
-- 300,000 a year) is grouped in index order, with no sort. PostgreSQL
-- can use them for index-only scans once the table is vacuumed.
DROP INDEX report_notifications_created;
DROP INDEX report_notifications_contract;
CREATE INDEX report_notifications_created ON report_notifications
    (created_ms, contract, acked, ack_ms, ack_recorded_ms, depth, calls, answered, abandoned, machine);
CREATE INDEX report_notifications_contract ON report_notifications
    (contract, created_ms, acked, ack_ms, ack_recorded_ms, depth, calls, answered, abandoned, machine);

DROP INDEX report_contacts_created;
CREATE INDEX report_contacts_contact ON report_contacts
    (contact, created_ms, contract, acked_calls, ack_ms, depth, calls, answered, abandoned, machine);

DROP INDEX report_sip_created;
CREATE INDEX report_sip_code ON report_sip (sip_code, created_ms, contract, calls);
