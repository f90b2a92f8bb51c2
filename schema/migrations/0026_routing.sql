-- Routing: each workspace's assignment rules (in order), teams with their members' capacity,
-- territories, SLA settings and fallback queue; the round-robin cursor per team; and every
-- assignment decision, keyed by the event that caused it, so a re-run of the routing reactor
-- finds the decision it already made instead of advancing a cursor twice.

-- A workspace routes leads only once it has this row (any PUT /v1/routing/... creates it).
CREATE TABLE routing_settings (
    workspace       text PRIMARY KEY,
    fallback_queue  text NOT NULL DEFAULT 'unassigned',
    sla             jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL
);

CREATE TABLE routing_rules (
    workspace    text NOT NULL,
    rule_id      text NOT NULL,
    position     integer NOT NULL,
    name         text NOT NULL,
    condition    text NOT NULL,
    target_kind  text NOT NULL CHECK (target_kind IN ('owner', 'team', 'queue')),
    target       text NOT NULL,
    reassign     boolean NOT NULL DEFAULT false,
    priority     text,
    PRIMARY KEY (workspace, rule_id),
    UNIQUE (workspace, position)
);

CREATE TABLE routing_teams (
    workspace         text NOT NULL,
    team_id           text NOT NULL,
    name              text NOT NULL,
    strategy          text NOT NULL CHECK (strategy IN ('round-robin', 'least-loaded')),
    escalation_owner  text,
    overflow_queue    text,
    PRIMARY KEY (workspace, team_id)
);

CREATE TABLE routing_team_members (
    workspace  text NOT NULL,
    team_id    text NOT NULL,
    position   integer NOT NULL,
    owner      text NOT NULL,
    capacity   integer CHECK (capacity IS NULL OR capacity > 0),
    PRIMARY KEY (workspace, team_id, owner),
    UNIQUE (workspace, team_id, position),
    FOREIGN KEY (workspace, team_id) REFERENCES routing_teams (workspace, team_id)
        ON DELETE CASCADE
);

CREATE TABLE routing_territories (
    workspace     text NOT NULL,
    territory_id  text NOT NULL,
    position      integer NOT NULL,
    name          text NOT NULL,
    countries     text[] NOT NULL DEFAULT '{}',
    regions       text[] NOT NULL DEFAULT '{}',
    target_kind   text NOT NULL CHECK (target_kind IN ('owner', 'team', 'queue')),
    target        text NOT NULL,
    PRIMARY KEY (workspace, territory_id),
    UNIQUE (workspace, position)
);

-- No foreign key to routing_teams: replacing the teams (PUT) keeps each team's place in its
-- rotation.
CREATE TABLE routing_cursors (
    workspace    text NOT NULL,
    team_id      text NOT NULL,
    next_member  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace, team_id)
);

CREATE TABLE routing_decisions (
    workspace   text NOT NULL,
    source_id   text NOT NULL,   -- the event (or overdue task) the decision was made for
    lead_id     text NOT NULL,
    owner       text,
    team        text,
    queue       text,
    rule_id     text,
    rule_name   text,
    reason      text NOT NULL,
    priority    text,
    task_id     text,            -- the follow-up task the assignment opens or moves
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, source_id)
);

-- Owners' loads count recent decisions the tasks read model has not caught up with yet.
CREATE INDEX routing_decisions_by_owner ON routing_decisions (workspace, owner, decided_at);
