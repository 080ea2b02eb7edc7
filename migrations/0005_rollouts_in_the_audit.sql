-- The seed's config_versions carried ab_test, canary and feature_flags columns that
-- nothing ever wrote. What they were meant to hold lives elsewhere now:
--   feature_flags: a version's content itself, when an environment projects it in the
--     Flagd format (checked as flagd loads it before it is recorded);
--   canary: each step of a staged rollout (canary started, promoted, rolled back, and
--     why), as rows of config_audit against the version, which every ledger keeps;
--   ab_test: a percentage split is flag targeting (flagd's `fractional`) in that content.
-- Empty columns that say otherwise would only mislead a reader of the table.
ALTER TABLE config_versions
  DROP COLUMN ab_test,
  DROP COLUMN canary,
  DROP COLUMN feature_flags;
