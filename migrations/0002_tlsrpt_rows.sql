-- relayd shared state, schema 2: TLS-RPT counts keep every particular.
--
-- Schema 1 keyed tlsrpt_counts by result type and MX host only, which
-- folds together sessions that a report must keep apart (two policies of
-- one type in a day, failures with different particulars). Each row now
-- also has `detail` (the policy's mx patterns and a failure's particulars,
-- as relayd writes them: see TLSRPTCountRow) and is keyed by `row_key`,
-- the md5 of everything that makes the row distinct (the texts themselves
-- may be too long for a btree key).
--
-- Rows are written with absolute values per instance: INSERT … ON CONFLICT
-- (day, policy_domain, instance, row_key) DO UPDATE SET count =
-- GREATEST(tlsrpt_counts.count, EXCLUDED.count), so a snapshot pushed
-- again never counts twice. A report sums over instances.

ALTER TABLE tlsrpt_counts ADD COLUMN detail text NOT NULL DEFAULT '';
ALTER TABLE tlsrpt_counts ADD COLUMN row_key text;
UPDATE tlsrpt_counts SET row_key = md5(jsonb_build_array(policy_type, policy_strings, result_type, receiving_mx_hostname, detail)::text);
ALTER TABLE tlsrpt_counts ALTER COLUMN row_key SET NOT NULL;
ALTER TABLE tlsrpt_counts DROP CONSTRAINT tlsrpt_counts_pkey;
ALTER TABLE tlsrpt_counts ADD PRIMARY KEY (day, policy_domain, instance, row_key);
