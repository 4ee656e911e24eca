-- A channel's cap on upstream calls in flight in each worker process (null: no cap beyond the
-- worker's own slots), so a slow or hanging upstream account cannot hold every slot.
ALTER TABLE channels ADD COLUMN max_concurrency integer CHECK (max_concurrency IS NULL OR max_concurrency > 0);
