-- relayd shared state, schema 1: what issue 17 shares between instances.
-- Applied by relayd (`relayd state migrate`, or at start) in one
-- transaction, recorded in relayd_schema_migrations with its checksum.
-- Never edit this file once released: put changes in 0002_….sql.
--
-- Conventions:
--   * domains are stored lowercased, without a trailing dot (CHECK below);
--   * instance names are the `[state] instance` of the relayd that wrote;
--   * times are timestamptz (UTC on the wire); days are UTC dates;
--   * change_seq: every row written takes the next value of one sequence
--     (on INSERT by default, on UPDATE by trigger), so a reader keeps the
--     highest value it has seen and asks "WHERE change_seq > $1" for what
--     changed since. Deleted rows do not show there: tables whose rows are
--     forgotten record that in an audit table that does.

CREATE SEQUENCE relayd_change_seq AS bigint;

CREATE FUNCTION relayd_bump_change_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := nextval('relayd_change_seq');
    RETURN NEW;
END;
$$;

CREATE DOMAIN relayd_domain AS text
    CHECK (VALUE = lower(VALUE) AND length(VALUE) BETWEEN 1 AND 255 AND right(VALUE, 1) <> '.');

CREATE DOMAIN relayd_instance AS text
    CHECK (length(VALUE) BETWEEN 1 AND 64);

-- MTA-STS (RFC 8461) ------------------------------------------------------

-- The policy cache: one current policy per domain.
CREATE TABLE mta_sts_policies (
    domain      relayd_domain PRIMARY KEY,
    policy_id   text NOT NULL,                -- the id= of the _mta-sts TXT record
    policy_text text NOT NULL,                -- the policy file as fetched
    fetched_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,         -- fetched_at + max_age
    fetched_by  relayd_instance NOT NULL,
    change_seq  bigint NOT NULL DEFAULT nextval('relayd_change_seq'),
    CHECK (expires_at >= fetched_at)
);
CREATE INDEX mta_sts_policies_change_seq ON mta_sts_policies (change_seq);
CREATE INDEX mta_sts_policies_expires_at ON mta_sts_policies (expires_at);
CREATE TRIGGER mta_sts_policies_change_seq BEFORE UPDATE ON mta_sts_policies
    FOR EACH ROW EXECUTE FUNCTION relayd_bump_change_seq();

-- One instance fetches a domain's policy while the others wait: the lease
-- is taken with INSERT … ON CONFLICT (domain) DO UPDATE … WHERE
-- mta_sts_fetch_leases.until < now() RETURNING holder.
CREATE TABLE mta_sts_fetch_leases (
    domain relayd_domain PRIMARY KEY,
    holder relayd_instance NOT NULL,
    until  timestamptz NOT NULL
);

-- Learned TLS status -------------------------------------------------------

-- The record per domain as decided (the learned level and the operator's
-- pin); `record` may hold the whole record in LearnedRecordFormat.
CREATE TABLE learned_records (
    domain      relayd_domain PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('none', 'opportunistic', 'forced', 'verify', 'tls-exclusive')),
    level_since timestamptz NOT NULL,
    pinned      text CHECK (pinned IN ('none', 'opportunistic', 'forced', 'verify', 'tls-exclusive')),
    record      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  relayd_instance NOT NULL,
    change_seq  bigint NOT NULL DEFAULT nextval('relayd_change_seq')
);
CREATE INDEX learned_records_change_seq ON learned_records (change_seq);
CREATE TRIGGER learned_records_change_seq BEFORE UPDATE ON learned_records
    FOR EACH ROW EXECUTE FUNCTION relayd_bump_change_seq();

-- Evidence per domain, per instance and per level (and per MX host; ''
-- is the domain as a whole). Merged evidence is an aggregate over
-- instances: min(first_seen), max(last_seen), sum(count); distinct days
-- across instances come from learned_evidence_days.
CREATE TABLE learned_evidence (
    domain     relayd_domain NOT NULL,
    instance   relayd_instance NOT NULL,
    level      text NOT NULL CHECK (level IN ('plaintext', 'tls', 'verified')),
    mx_host    text NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    count      bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    days       integer NOT NULL DEFAULT 0 CHECK (days >= 0),  -- distinct UTC days this instance saw it
    change_seq bigint NOT NULL DEFAULT nextval('relayd_change_seq'),
    PRIMARY KEY (domain, instance, level, mx_host),
    CHECK (last_seen >= first_seen)
);
CREATE INDEX learned_evidence_change_seq ON learned_evidence (change_seq);
CREATE TRIGGER learned_evidence_change_seq BEFORE UPDATE ON learned_evidence
    FOR EACH ROW EXECUTE FUNCTION relayd_bump_change_seq();

-- The UTC days on which any instance saw a level for a domain (the
-- "verified on two days" rule counts distinct days over all instances).
CREATE TABLE learned_evidence_days (
    domain relayd_domain NOT NULL,
    level  text NOT NULL CHECK (level IN ('plaintext', 'tls', 'verified')),
    day    date NOT NULL,
    PRIMARY KEY (domain, level, day)
);

-- The operator's pins, unpins and forgets, with their audit. Append-only.
CREATE TABLE learned_actions (
    id         bigserial PRIMARY KEY,
    domain     relayd_domain NOT NULL,
    action     text NOT NULL CHECK (action IN ('pin', 'unpin', 'forget')),
    level      text CHECK (level IN ('none', 'opportunistic', 'forced', 'verify', 'tls-exclusive')),  -- a pin's level
    by         text NOT NULL,                  -- who: the operator's name
    at         timestamptz NOT NULL DEFAULT now(),
    instance   relayd_instance NOT NULL,       -- where it was typed
    reason     text NOT NULL DEFAULT '',
    change_seq bigint NOT NULL DEFAULT nextval('relayd_change_seq'),
    CHECK ((action = 'pin') = (level IS NOT NULL))
);
CREATE INDEX learned_actions_domain ON learned_actions (domain, at);
CREATE INDEX learned_actions_change_seq ON learned_actions (change_seq);

-- TLS-RPT (RFC 8460) ---------------------------------------------------------

-- Session counts per UTC day, policy domain, instance and result type
-- ('success' or one of the RFC's result types). A report for a day sums
-- over instances. Rows are added to with INSERT … ON CONFLICT DO UPDATE
-- SET count = tlsrpt_counts.count + EXCLUDED.count.
CREATE TABLE tlsrpt_counts (
    day                   date NOT NULL,
    policy_domain         relayd_domain NOT NULL,
    instance              relayd_instance NOT NULL,
    policy_type           text NOT NULL CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
    policy_strings        text NOT NULL DEFAULT '',   -- the policy's strings, one per line
    result_type           text NOT NULL,
    receiving_mx_hostname text NOT NULL DEFAULT '',
    count                 bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    change_seq            bigint NOT NULL DEFAULT nextval('relayd_change_seq'),
    PRIMARY KEY (day, policy_domain, instance, policy_type, result_type, receiving_mx_hostname)
);
CREATE INDEX tlsrpt_counts_change_seq ON tlsrpt_counts (change_seq);
CREATE TRIGGER tlsrpt_counts_change_seq BEFORE UPDATE ON tlsrpt_counts
    FOR EACH ROW EXECUTE FUNCTION relayd_bump_change_seq();

-- One instance sends a day's reports: it holds the day's lease.
CREATE TABLE tlsrpt_report_leases (
    day    date PRIMARY KEY,
    holder relayd_instance NOT NULL,
    until  timestamptz NOT NULL,
    done_at timestamptz                          -- every report of the day sent
);

-- Each report sent, so a new lease holder does not send one twice.
CREATE TABLE tlsrpt_reports_sent (
    day           date NOT NULL,
    policy_domain relayd_domain NOT NULL,
    sent_by       relayd_instance NOT NULL,
    sent_at       timestamptz NOT NULL DEFAULT now(),
    report_id     text NOT NULL,
    PRIMARY KEY (day, policy_domain)
);

-- The tls-exclusive drop audit ------------------------------------------------

CREATE TABLE tls_exclusive_drops (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    instance   relayd_instance NOT NULL,
    queue_id   text NOT NULL,
    domain     relayd_domain NOT NULL,
    reason     text NOT NULL,
    change_seq bigint NOT NULL DEFAULT nextval('relayd_change_seq')
);
CREATE INDEX tls_exclusive_drops_at ON tls_exclusive_drops (at);
CREATE INDEX tls_exclusive_drops_change_seq ON tls_exclusive_drops (change_seq);
