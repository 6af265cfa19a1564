"""Flow control's claim in one round trip on PostgreSQL: the function
``headwater_claim_flow`` (see store/flow_pg.py). SQLite gets nothing: its claim already
runs in one transaction on its one writer.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

The function picks the best pending jobs (``FOR UPDATE SKIP LOCKED``, as the fast path
does), claims those without limits, and decides over the others in the same
transaction, so concurrent claimers work on disjoint rows and never wait for each other
while they hold rows:

- a concurrency key is taken with ``pg_try_advisory_xact_lock`` and only when this
  claimer holds the key's head (its oldest pending jobs), and only that head may start;
  a key another claimer holds is "busy" this round. Its running jobs are counted after
  the lock, in a later statement (a fresh snapshot under READ COMMITTED): every claim of
  the key's jobs committed before is seen.
- rate keys are waited for (``pg_advisory_xact_lock``), in one order in every claimer,
  so a shared rate key serialises its claimers instead of turning them away. The only
  waits in the function are these, and a holder of a rate lock never waits for a row.

Returns the claimed jobs joined with their steps, then information rows (``kind``):
``held`` (how many limited jobs were in the window), ``full_c``/``full_r`` (keys found
full), ``retry`` (when the first full rate window frees a start), ``busy`` (keys another
claimer held), ``skipped`` / ``cancel`` (jobs ended by skip_new, running jobs asked to
stop by cancel_running). The wake-ups of the last two are sent here (NOTIFY, at commit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOB = (
    "id text, workspace text, task text, status text, input jsonb, output jsonb, "
    "error text, source_type text, source_id text, dedup_key text, tags text, "
    "parent_job_id text, worker_id text, attempt integer, max_attempts integer, "
    "cancel_requested boolean, created_at timestamptz, started_at timestamptz, "
    "finished_at timestamptz"
)
_STEP = (
    "s_job_id text, s_name text, s_action text, s_status text, s_exit_code integer, "
    "s_output jsonb, s_error text, s_attempts integer, s_started_at timestamptz, "
    "s_finished_at timestamptz"
)
_NULLS = ", ".join(f"NULL::{c.split()[-1]}" for c in f"{_JOB}, {_STEP}".split(", "))
_JOB_OUT = ", ".join(f"c.{c.split()[0]}" for c in _JOB.split(", "))
_STEP_OUT = ", ".join(f"s.{c.split()[0].removeprefix('s_')}" for c in _STEP.split(", "))
_PAUSED = "(SELECT p.task FROM paused_tasks AS p)"
_HEAD_WHERE = f"""j.status = 'pending' AND j.tags = ANY(p_sigs) AND j.task NOT IN {_PAUSED}
               AND (j.rate_key IS NULL OR j.rate_key <> ALL(p_aside_r))"""
# A NOTIFY payload over 7,900 bytes becomes "*" (store.fastpath.PAYLOAD_LIMIT).
_HINT = (
    "CASE WHEN octet_length(array_to_string({0}, ',')) > 7900 THEN '*' "
    "ELSE array_to_string({0}, ',') END"
)

FUNCTION = f"""
CREATE OR REPLACE FUNCTION headwater_claim_flow(
    p_worker text, p_sigs text[], p_limit integer, p_aside_c text[], p_aside_r text[]
) RETURNS TABLE ({_JOB}, {_STEP}, kind text, info text, info_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    r record;
    i integer;
    n integer;
    ck text;
    rk text;
    v_at timestamptz;
    v_free text[] := '{{}}';
    h_id text[] := '{{}}';
    h_ckey text[] := '{{}}';
    h_climit integer[] := '{{}}';
    h_cstrat text[] := '{{}}';
    h_rkey text[] := '{{}}';
    h_rlimit integer[] := '{{}}';
    h_rper float8[] := '{{}}';
    v_mine text[] := '{{}}';
    v_locked text[] := '{{}}';
    v_ok text[] := '{{}}';
    v_busy text[] := '{{}}';
    v_running jsonb := '{{}}';
    v_started jsonb := '{{}}';
    v_oldest jsonb := '{{}}';
    v_used jsonb := '{{}}';
    v_taken jsonb := '{{}}';
    v_rlimit jsonb := '{{}}';
    v_rper jsonb := '{{}}';
    v_full_c text[] := '{{}}';
    v_full_r text[] := '{{}}';
    v_skip text[] := '{{}}';
    v_skip_why text[] := '{{}}';
    v_cancel_keys text[] := '{{}}';
    v_skipped text[] := '{{}}';
    v_cancelled text[] := '{{}}';
    v_claim text[] := '{{}}';
    v_claim_seq bigint[] := '{{}}';
    v_next jsonb := '{{}}';
    v_floor timestamptz;
    v_retry timestamptz;
    v_room integer;
    v_now timestamptz;
BEGIN
    -- The window: the best pending jobs, locked (rows another claimer holds are skipped).
    FOR r IN
        SELECT q.* FROM unnest(p_sigs) AS s(signature)
         CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.created_at, j.concurrency_key, j.concurrency_limit,
                       j.concurrency_strategy, j.rate_key, j.rate_limit, j.rate_per
                  FROM jobs AS j
                 WHERE j.status = 'pending' AND j.tags = s.signature
                   AND j.task NOT IN {_PAUSED}
                   AND (j.concurrency_key IS NULL OR j.concurrency_key <> ALL(p_aside_c))
                   AND (j.rate_key IS NULL OR j.rate_key <> ALL(p_aside_r))
                 ORDER BY j.priority DESC, j.created_at, j.id
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED) AS q
         ORDER BY q.priority DESC, q.created_at, q.id
         LIMIT p_limit
    LOOP
        IF r.concurrency_key IS NULL AND r.rate_key IS NULL THEN
            v_free := v_free || r.id;
        ELSE
            h_id := h_id || r.id;
            h_ckey := h_ckey || r.concurrency_key;
            h_climit := h_climit || r.concurrency_limit;
            h_cstrat := h_cstrat || r.concurrency_strategy;
            h_rkey := h_rkey || r.rate_key;
            h_rlimit := h_rlimit || r.rate_limit;
            h_rper := h_rper || r.rate_per;
        END IF;
    END LOOP;
    v_room := p_limit - cardinality(v_free);

    IF cardinality(h_id) > 0 AND v_room > 0 THEN
        -- Rate keys: waited for, in lock-id order (no cycles), holding no other lock.
        PERFORM pg_advisory_xact_lock(l.h)
           FROM (SELECT DISTINCT hashtextextended('r:' || k, 0) AS h
                   FROM unnest(h_rkey) AS k WHERE k IS NOT NULL ORDER BY 1) AS l;
        -- Each concurrency key's head, as far as it is ours: the leading run of its
        -- oldest pending jobs that we hold. Read before the key's lock: the rows we
        -- hold cannot change, and a job that comes before them later is a new one or
        -- one that had started already (its start is counted below, after the lock).
        FOR r IN
            SELECT d.k, ARRAY(SELECT j.id FROM jobs AS j
                               WHERE j.concurrency_key = d.k AND {_HEAD_WHERE}
                               ORDER BY j.priority DESC, j.created_at, j.id LIMIT d.n) AS head
              FROM (SELECT k, count(*)::integer AS n FROM unnest(h_ckey) AS k
                     WHERE k IS NOT NULL GROUP BY k) AS d
        LOOP
            n := 0;
            WHILE n < cardinality(r.head) AND r.head[n + 1] = ANY(h_id) LOOP
                n := n + 1;
            END LOOP;
            IF n > 0 THEN
                v_mine := v_mine || r.k;
                v_ok := v_ok || r.head[1:n];
            ELSE
                v_busy := v_busy || r.k;  -- another claimer holds its head
            END IF;
        END LOOP;
        -- Only tried: a key another claimer holds is busy for this claim.
        SELECT coalesce(array_agg(k), '{{}}') INTO v_locked FROM unnest(v_mine) AS k
         WHERE pg_try_advisory_xact_lock(hashtextextended('c:' || k, 0));
        v_busy := v_busy || ARRAY(SELECT k FROM unnest(v_mine) AS k WHERE k <> ALL(v_locked));
        -- After the locks (a new statement: a fresh snapshot): each key's running jobs,
        -- with every claim committed by a holder of its lock before us.
        FOR r IN
            SELECT k, (SELECT count(*) FROM jobs AS x
                        WHERE x.concurrency_key = k AND x.concurrency_key IS NOT NULL
                          AND x.status = 'running') AS running
              FROM unnest(v_locked) AS k
        LOOP
            v_running := v_running || jsonb_build_object(r.k, r.running);
        END LOOP;
        v_now := clock_timestamp();  -- the windows end here (after the rate locks)
        -- A rate key's starts are numbered (jobs.rate_seq, in start order: both are
        -- given under the key's lock, the times never going back), so its window is
        -- counted from two rows, its first start in the window and its newest: a
        -- window that never binds would otherwise cost a count of every start in it,
        -- under the lock. A number lost (a start undone by a recovery) makes the count
        -- higher, never lower. Starts without numbers (before 0014): counted.
        FOR r IN
            SELECT w.k, f.started_at AS first_at, f.rate_seq AS first_seq,
                   l.started_at AS last_at, l.rate_seq AS last_seq,
                   CASE WHEN f.started_at IS NOT NULL
                         AND (f.rate_seq IS NULL OR l.rate_seq IS NULL)
                        THEN (SELECT count(*) FROM jobs AS s WHERE s.rate_key = w.k
                                 AND s.started_at >= f.started_at) END AS counted
              FROM (SELECT DISTINCT ON (u.k) u.k, u.per FROM unnest(h_rkey, h_rper) AS u(k, per)
                     WHERE u.k IS NOT NULL) AS w
              LEFT JOIN LATERAL (
                    SELECT s.started_at, s.rate_seq FROM jobs AS s
                     WHERE s.rate_key = w.k
                       AND s.started_at > v_now - make_interval(secs => w.per)
                     ORDER BY s.started_at, s.rate_seq LIMIT 1) AS f ON true
              LEFT JOIN LATERAL (
                    SELECT s.started_at, s.rate_seq FROM jobs AS s
                     WHERE s.rate_key = w.k AND s.started_at IS NOT NULL
                     ORDER BY s.started_at DESC, s.rate_seq DESC NULLS LAST LIMIT 1) AS l ON true
        LOOP
            v_started := v_started || jsonb_build_object(r.k, CASE
                WHEN r.first_at IS NULL THEN 0
                WHEN r.counted IS NOT NULL THEN r.counted
                ELSE r.last_seq - r.first_seq + 1 END);
            v_oldest := v_oldest || jsonb_build_object(r.k, r.first_at);
            v_next := v_next || jsonb_build_object(r.k, coalesce(r.last_seq, 0) + 1);
            IF r.last_at > v_floor OR v_floor IS NULL THEN
                v_floor := r.last_at;
            END IF;
        END LOOP;

        -- store.flow.decide, over the rows that may start, in claim order.
        FOR i IN 1 .. cardinality(h_id) LOOP
            CONTINUE WHEN h_ckey[i] IS NOT NULL
                AND (h_ckey[i] <> ALL(v_locked) OR h_id[i] <> ALL(v_ok));
            ck := h_ckey[i];
            rk := h_rkey[i];
            IF ck IS NOT NULL AND ck = ANY(v_full_c) THEN
                IF h_cstrat[i] = 'skip_new' THEN
                    v_skip := v_skip || h_id[i];
                    v_skip_why := v_skip_why || format(
                        'skipped: concurrency key %L already has %s running job(s) '
                        '(strategy skip_new)', ck, coalesce(h_climit[i], 1));
                END IF;
                CONTINUE;
            END IF;
            CONTINUE WHEN rk IS NOT NULL AND rk = ANY(v_full_r);
            IF ck IS NOT NULL AND coalesce((v_running ->> ck)::integer, 0)
                    + coalesce((v_used ->> ck)::integer, 0) >= coalesce(h_climit[i], 1) THEN
                v_full_c := v_full_c || ck;
                IF h_cstrat[i] = 'skip_new' THEN
                    v_skip := v_skip || h_id[i];
                    v_skip_why := v_skip_why || format(
                        'skipped: concurrency key %L already has %s running job(s) '
                        '(strategy skip_new)', ck, coalesce(h_climit[i], 1));
                ELSIF h_cstrat[i] = 'cancel_running' THEN
                    v_cancel_keys := v_cancel_keys || ck;
                END IF;
                CONTINUE;
            END IF;
            IF rk IS NOT NULL THEN
                v_rlimit := v_rlimit || jsonb_build_object(rk, coalesce(h_rlimit[i], 1));
                v_rper := v_rper || jsonb_build_object(rk, coalesce(h_rper[i], 0));
                IF coalesce((v_started ->> rk)::integer, 0)
                        + coalesce((v_taken ->> rk)::integer, 0) >= coalesce(h_rlimit[i], 1) THEN
                    v_full_r := v_full_r || rk;
                    CONTINUE;
                END IF;
            END IF;
            EXIT WHEN cardinality(v_claim) >= v_room;
            IF rk IS NOT NULL THEN
                v_taken := v_taken || jsonb_build_object(
                    rk, coalesce((v_taken ->> rk)::integer, 0) + 1);
            END IF;
            IF ck IS NOT NULL THEN
                v_used := v_used || jsonb_build_object(
                    ck, coalesce((v_used ->> ck)::integer, 0) + 1);
            END IF;
            v_claim := v_claim || h_id[i];
            IF rk IS NOT NULL THEN
                v_claim_seq := v_claim_seq || (v_next ->> rk)::bigint;
                v_next := v_next || jsonb_build_object(rk, (v_next ->> rk)::bigint + 1);
            ELSE
                v_claim_seq := v_claim_seq || NULL::bigint;
            END IF;
        END LOOP;
        -- A window this claim filled is full too (it may not have met a job to refuse):
        -- its next start is due when its oldest start leaves it.
        FOR rk IN SELECT jsonb_object_keys(v_rlimit) LOOP
            IF coalesce((v_started ->> rk)::integer, 0) + coalesce((v_taken ->> rk)::integer, 0)
                    >= (v_rlimit ->> rk)::integer THEN
                IF NOT rk = ANY(v_full_r) THEN
                    v_full_r := v_full_r || rk;
                END IF;
                v_at := coalesce((v_oldest ->> rk)::timestamptz, clock_timestamp())
                      + make_interval(secs => (v_rper ->> rk)::float8);
                IF v_retry IS NULL OR v_at < v_retry THEN
                    v_retry := v_at;
                END IF;
            END IF;
        END LOOP;
    END IF;

    -- The starts: after every read above, and never before a rate key's newest start.
    v_now := greatest(clock_timestamp(), v_floor);
    IF cardinality(v_skip) > 0 THEN
        WITH s AS (
            UPDATE jobs AS j SET status = 'cancelled', error = u.why, finished_at = v_now
              FROM unnest(v_skip, v_skip_why) AS u(id, why)
             WHERE j.id = u.id AND j.status = 'pending'
            RETURNING j.id, u.why
        ), l AS (
            INSERT INTO logs (job_id, step, stream, line, ts)
            SELECT s.id, NULL, 'system', s.why, v_now FROM s
        )
        SELECT coalesce(array_agg(s.id), '{{}}') INTO v_skipped FROM s;
        IF cardinality(v_skipped) > 0 THEN
            PERFORM pg_notify('headwater_finished', {_HINT.format("v_skipped")});
        END IF;
    END IF;
    IF cardinality(v_cancel_keys) > 0 THEN
        WITH c AS (
            UPDATE jobs AS j SET cancel_requested = true
             WHERE j.id IN (SELECT x.id FROM jobs AS x
                             WHERE x.concurrency_key = ANY(v_cancel_keys)
                               AND x.status = 'running' AND NOT x.cancel_requested
                               AND x.worker_id IS NOT NULL
                               FOR UPDATE SKIP LOCKED)
            RETURNING j.id, j.concurrency_key
        ), l AS (
            INSERT INTO logs (job_id, step, stream, line, ts)
            SELECT c.id, NULL, 'system',
                   format('cancel requested: a newer job of concurrency key %L is waiting '
                          '(strategy cancel_running)', c.concurrency_key), v_now FROM c
        )
        SELECT coalesce(array_agg(c.id), '{{}}') INTO v_cancelled FROM c;
        PERFORM pg_notify('headwater_cancel', x) FROM unnest(v_cancelled) AS x;
    END IF;
    PERFORM pg_notify('headwater_logs', x) FROM unnest(v_skipped || v_cancelled) AS x;

    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs AS j SET status = 'running', worker_id = p_worker,
                             attempt = j.attempt + 1, started_at = v_now, rate_seq = u.seq
          FROM unnest(v_free || v_claim,
                      array_fill(NULL::bigint, ARRAY[cardinality(v_free)]) || v_claim_seq)
               AS u(id, seq)
         WHERE j.id = u.id AND j.status = 'pending'
        RETURNING j.*
    )
    SELECT {_JOB_OUT}, {_STEP_OUT}, 'job'::text, NULL::text, NULL::timestamptz
      FROM claimed AS c LEFT JOIN steps AS s ON s.job_id = c.id
     ORDER BY c.created_at, c.id, s.started_at NULLS LAST, s.name;
    RETURN QUERY
    SELECT {_NULLS}, e.kind, e.info, e.ts
      FROM (SELECT 'held'::text AS kind, cardinality(h_id)::text AS info,
                   NULL::timestamptz AS ts
            UNION ALL SELECT 'full_c', k, NULL FROM unnest(v_full_c) AS k
            UNION ALL SELECT 'full_r', k, NULL FROM unnest(v_full_r) AS k
            UNION ALL SELECT 'retry', NULL, v_retry WHERE v_retry IS NOT NULL
            UNION ALL SELECT 'busy', k, NULL FROM unnest(v_busy) AS k
            UNION ALL SELECT 'skipped', k, NULL FROM unnest(v_skipped) AS k
            UNION ALL SELECT 'cancel', k, NULL FROM unnest(v_cancelled) AS k) AS e;
END
$fn$
"""


def upgrade() -> None:
    # A rate-limited job's start number within its rate key (PostgreSQL's claim counts
    # windows with it; SQLite keeps its windows in the claimer).
    op.add_column("jobs", sa.Column("rate_seq", sa.BigInteger()))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS headwater_claim_flow(text, text[], integer, text[], text[])"
        )
    op.drop_column("jobs", "rate_seq")
