-- At most one unfinished notification per contract and ticket, enforced by
-- the database so that two racing requests cannot both start calling.
CREATE UNIQUE INDEX notifications_one_active
    ON notifications (contract, ticket)
    WHERE state NOT IN ('acked', 'action_requested', 'exhausted', 'cancelled');
