-- The janitor's schedule of questions to the wallet about money in flight: when a waiting
-- payment, refund or cancel is asked next (NULL: as soon as it is old enough), and how many
-- times the wallet could not answer. Deferring the ones it cannot answer keeps them from
-- starving newer operations.
ALTER TABLE payments ADD COLUMN next_query_at BIGINT;
ALTER TABLE payments ADD COLUMN unanswered_queries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN next_query_at BIGINT;
ALTER TABLE refunds ADD COLUMN unanswered_queries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cancels ADD COLUMN next_query_at BIGINT;
ALTER TABLE cancels ADD COLUMN unanswered_queries BIGINT NOT NULL DEFAULT 0;
