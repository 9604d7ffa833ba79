-- `failed`: a notification that could not be dialled at all (its trunk is
-- unusable, its audio cannot be made). It has ended, so a re-sent alert
-- for the same ticket starts a new notification instead of merging into
-- it.
DROP INDEX notifications_one_active;
CREATE UNIQUE INDEX notifications_one_active
    ON notifications (contract, ticket)
    WHERE state NOT IN ('acked', 'action_requested', 'action_taken', 'exhausted', 'cancelled', 'failed');
