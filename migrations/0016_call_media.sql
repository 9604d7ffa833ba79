-- What a call's media did (issue 12): whether it was SRTP and how many
-- packets failed SRTP authentication, and what the far end reported in
-- RTCP about our stream (reports read, cumulative and last fraction lost,
-- interarrival jitter) with the round trip from LSR/DLSR. NULL: the call
-- had no media, or was recorded before this migration.
ALTER TABLE attempts ADD COLUMN srtp BIGINT;
ALTER TABLE attempts ADD COLUMN srtp_auth_failed BIGINT;
ALTER TABLE attempts ADD COLUMN rtcp_reports BIGINT;
ALTER TABLE attempts ADD COLUMN remote_lost BIGINT;
ALTER TABLE attempts ADD COLUMN remote_fraction_lost_pct DOUBLE PRECISION;
ALTER TABLE attempts ADD COLUMN remote_jitter_ms DOUBLE PRECISION;
ALTER TABLE attempts ADD COLUMN rtt_ms DOUBLE PRECISION;
