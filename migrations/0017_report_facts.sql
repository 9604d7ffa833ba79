-- Report facts (issue 14): each ended notification's figures, worked out
-- once from its attempts and final state, so a year of reports reads one
-- narrow row per notification instead of joining every call and matching
-- outcome JSON. `report_folded` = 1 once a notification's rows are here
-- (src/reports/facts.rs folds ended notifications whose calls have all
-- ended; ending a notification again sets it back to 0). Rows written
-- before this migration start at 0 and are folded by the first report
-- (the backfill). Reports read the facts of folded notifications and the
-- raw rows of the others (`notifications_unfolded`, a small index), in
-- one snapshot.
ALTER TABLE notifications ADD COLUMN report_folded BIGINT NOT NULL DEFAULT 0;
-- (report_folded, created_ms): an equality and a range, so a planner
-- without statistics (SQLite) still prefers it to the created_ms index.
CREATE INDEX notifications_unfolded ON notifications (report_folded, created_ms) WHERE report_folded = 0;

-- One row per folded notification. ack_ms: time to acknowledge as the
-- percentiles read it (operator's time, else the escalation's, else the
-- end of the acknowledging call; never negative); ack_recorded_ms: the
-- same without the call's end (what the monthly attainment reads);
-- depth: the escalation depth of an acknowledged notification.
CREATE TABLE report_notifications (
    notification_id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    acked BIGINT NOT NULL,
    ack_ms BIGINT,
    ack_recorded_ms BIGINT,
    depth BIGINT,
    calls BIGINT NOT NULL,
    answered BIGINT NOT NULL,
    abandoned BIGINT NOT NULL,
    machine BIGINT NOT NULL
);
CREATE INDEX report_notifications_created ON report_notifications (created_ms);
CREATE INDEX report_notifications_contract ON report_notifications (contract, created_ms);

-- One row per folded notification and contact called for it; ack_ms and
-- depth on the row of the contact whose key press acknowledged it.
CREATE TABLE report_contacts (
    notification_id TEXT NOT NULL,
    contact TEXT NOT NULL,
    contract TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    acked_calls BIGINT NOT NULL,
    ack_ms BIGINT,
    depth BIGINT,
    calls BIGINT NOT NULL,
    answered BIGINT NOT NULL,
    abandoned BIGINT NOT NULL,
    machine BIGINT NOT NULL,
    PRIMARY KEY (notification_id, contact)
);
CREATE INDEX report_contacts_created ON report_contacts (created_ms);

-- Failed calls (SIP status >= 300) of folded notifications, by status.
CREATE TABLE report_sip (
    notification_id TEXT NOT NULL,
    sip_code BIGINT NOT NULL,
    contract TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    PRIMARY KEY (notification_id, sip_code)
);
CREATE INDEX report_sip_created ON report_sip (created_ms);
