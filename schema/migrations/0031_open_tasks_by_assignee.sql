-- Routing counts each candidate owner's open follow-ups (processors/routing_store.py, _LOADS):
-- through tasks_by_assignee it walked every task the owner ever had, open or done, so its cost
-- grew with the owner's history. Open tasks alone, indexed apart, keep it to the open ones.
CREATE INDEX tasks_open_by_assignee ON tasks (workspace, assignee) WHERE status = 'open';
