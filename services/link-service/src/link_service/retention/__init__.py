"""Click retention: clicks older than CLICK_RETENTION_DAYS are rolled into per-day counts
(`click_days`, what the portal and the share reminders read of them) and deleted, by
servicekit.retention's worker in bounded batches."""
