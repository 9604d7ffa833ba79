-- A run from a call that ended after its node lost the notification's
-- lease (another node took it over) keeps its audit record: the steps it
-- did take on the host, their outputs and exit codes. It is stored
-- `interrupted` (its result was not carried out under a live lease, and
-- its slot is free at once) with its record and the time its end was
-- refused by the fence; nothing else is written for it.
ALTER TABLE action_runs ADD COLUMN fenced_ms BIGINT;
