-- Background rescoring after a model is activated (processors/rescore.py): one row per job,
-- its progress written as it goes, so a restarted process resumes after `last_lead_id`.
CREATE TABLE rescore_jobs (
    workspace      text NOT NULL,
    job_id         text NOT NULL,
    model_id       text NOT NULL,
    model_version  integer NOT NULL,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'done', 'superseded', 'failed')),
    total          integer NOT NULL DEFAULT 0,
    done           integer NOT NULL DEFAULT 0,
    changed        integer NOT NULL DEFAULT 0,
    last_lead_id   text,
    error          text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    PRIMARY KEY (workspace, job_id)
);

-- Job ids are random UUIDs: unique on their own, so `GET .../rescore-jobs/{id}` and `status`
-- find a job by id (still filtered by workspace where a key asks).
CREATE UNIQUE INDEX rescore_jobs_by_id ON rescore_jobs (job_id);
CREATE INDEX rescore_jobs_running ON rescore_jobs (started_at) WHERE status = 'running';
