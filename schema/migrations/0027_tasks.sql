-- The tasks read model (projections/tasks.py): every follow-up task of a lead, from
-- LeadTaskOpened / LeadTaskCompleted / LeadTaskReassigned; erasure deletes a lead's rows.
CREATE TABLE tasks (
    workspace     text NOT NULL,
    task_id       text NOT NULL,
    lead_id       text NOT NULL,
    kind          text NOT NULL,
    assignee      text,
    due_at        timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('open', 'done')),
    escalated     boolean NOT NULL DEFAULT false,
    reason        text NOT NULL DEFAULT '',
    outcome       text,
    opened_at     timestamptz NOT NULL,
    completed_at  timestamptz,
    changed_at    timestamptz NOT NULL,   -- recorded_at of the last event applied to the row
    lead_version  integer NOT NULL,       -- that event's version in the lead's stream
    PRIMARY KEY (workspace, task_id)
);

-- Pages of GET /v1/tasks are ordered by (due_at, task_id), filtered by assignee or lead.
CREATE INDEX tasks_by_due ON tasks (workspace, due_at, task_id);
CREATE INDEX tasks_by_assignee ON tasks (workspace, assignee, due_at, task_id);
CREATE INDEX tasks_by_lead ON tasks (workspace, lead_id);
-- The overdue sweeper's question: open, not yet escalated, past due.
CREATE INDEX tasks_overdue ON tasks (workspace, due_at) WHERE status = 'open' AND NOT escalated;
