-- An operator's acknowledgement for someone on the phone (the console's
-- "acknowledge for someone", POST /v1/notifications/{id}/acknowledge):
-- who, by which token, why, as JSON. Stored before the running escalation
-- hears of it, so a restart or another node ends it as an
-- acknowledgement, not as a cancel.
ALTER TABLE notifications ADD COLUMN ack_request TEXT;
