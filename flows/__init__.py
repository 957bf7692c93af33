"""The flows, which conduct: ``batch_scrape`` (plan, open, fan out, record, persist,
summarise) and ``recover_stale_batches``; ``fan_out`` and ``progress`` are their parts."""
